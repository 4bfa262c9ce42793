"""Layer-for-layer compatibility with the peer: load its randomly initialised state_dict into ours.

For yolov8n, yolov5n (v5u) and yolo11n: build the peer's model from its own YAML, load the peer's
state_dict into our model of the same name with no key mapping (strict), and compare the decoded eval
outputs on random images. Run: ``.venv/bin/python benchmarks/compat_peer.py`` (needs benchmarks/peer/setup.sh).
"""

from __future__ import annotations

import sys

from _peer import in_peer, peer_available, rerun_in_peer

MODELS = {"yolov8n": "yolov8n.yaml", "yolov5n": "yolov5nu.yaml", "yolo11n": "yolo11n.yaml"}


def compare() -> int:
    import torch
    from ultralytics.nn.tasks import DetectionModel as PeerModel

    from yololab.nn import DetectionModel

    failures = 0
    print(f"{'model':<10} {'params ours':>12} {'params peer':>12} {'keys':>6} {'max rel diff':>13}  result")
    for ours_name, peer_yaml in MODELS.items():
        torch.manual_seed(0)
        peer = PeerModel(peer_yaml, nc=80, verbose=False)
        ours = DetectionModel(f"{ours_name}.yaml", nc=80)
        state = peer.state_dict()
        ours.load_state_dict(state, strict=True)
        peer.train()
        ours.train()
        with torch.no_grad():
            for _ in range(2):  # non-trivial BatchNorm statistics, identical in both
                x = torch.rand(2, 3, 256, 256)
                peer(x)
                ours(x)
        peer.eval()
        ours.eval()
        x = torch.rand(2, 3, 320, 320)
        with torch.no_grad():
            y_peer = peer(x)
            y_peer = y_peer[0] if isinstance(y_peer, (list, tuple)) else y_peer
            y_ours = ours(x)
        rel = ((y_ours - y_peer).abs().max() / y_peer.abs().max()).item()
        ok = y_ours.shape == y_peer.shape and rel < 1e-5
        failures += not ok
        n_ours, n_peer = (sum(p.numel() for p in m.parameters()) for m in (ours, peer))
        print(f"{ours_name:<10} {n_ours:>12,} {n_peer:>12,} {len(state):>6} {rel:>13.2e}  {'OK' if ok else 'MISMATCH'}")
    return 1 if failures else 0


if __name__ == "__main__":
    if in_peer():
        sys.exit(compare())
    if not peer_available():
        print("peer not installed: run benchmarks/peer/setup.sh first")
        sys.exit(0)
    sys.exit(rerun_in_peer(__file__))
