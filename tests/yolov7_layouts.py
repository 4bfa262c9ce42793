"""YOLOv7's training layouts, generated row for row from the architecture (test fixtures, not YOLOv7's files).

Each function returns the dict a YOLOv7 training YAML loads to: ``anchors``, ``depth_multiple`` / ``width_multiple``
and the ``[from, repeats, module, args]`` rows with YOLOv7's spelling (``Conv`` args ``[c2, k, s, None, 1,
nn.LeakyReLU(0.1)]`` in tiny, ``MP``, ``SP``, ``RepConv``, ``IDetect``, ...). The rows were checked to equal the
official ``cfg/training/*.yaml`` of WongKinYiu/yolov7 @a207844 (see docs/compatibility.md).
"""

from __future__ import annotations

LEAKY = "nn.LeakyReLU(0.1)"
UPSAMPLE = [-1, 1, "nn.Upsample", ["None", 2, "nearest"]]
ANCHORS_P5 = [[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401]]
ANCHORS_TINY = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
ANCHORS_P6 = [[19, 27, 44, 40, 38, 94], [96, 68, 86, 152, 180, 137], [140, 301, 303, 264, 238, 542],
              [436, 615, 739, 380, 925, 792]]


def _file(backbone: list, head: list, anchors: list) -> dict:
    return {"nc": 80, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": anchors,
            "backbone": backbone, "head": head}


def _conv(c2: int, k: int = 1, s: int = 1, source: int = -1, tiny: bool = False) -> list:
    return [source, 1, "Conv", [c2, k, s, "None", 1, LEAKY] if tiny else [c2, k, s]]


def _elan(hidden: int, c2: int, convs: int, concat: list, width: int | None = None, tiny: bool = False,
          sources: tuple = (-1, -2)) -> list:
    """Two 1x1 branches, ``convs`` 3x3 convs on the second, the concat of ``concat``, a 1x1 transition."""
    return [_conv(hidden, source=sources[0], tiny=tiny), _conv(hidden, source=sources[1], tiny=tiny),
            *(_conv(width or hidden, 3, tiny=tiny) for _ in range(convs)),
            [concat, 1, "Concat", [1]], _conv(c2, tiny=tiny)]


def _mp1(c: int, same_scale: int | None = None) -> list:
    """YOLOv7's MP-1 transition: MP -> 1x1 and 1x1 -> 3x3 stride 2, concatenated (with a neck feature)."""
    concat = [-1, -3] if same_scale is None else [-1, -3, same_scale]
    return [[-1, 1, "MP", []], _conv(c), _conv(c, source=-3), _conv(c, 3, 2), [concat, 1, "Concat", [1]]]


def yolov7_tiny() -> dict:
    """yolov7-tiny: LeakyReLU(0.1) everywhere, ELANs of two 3x3 convs, SP pyramid, IDetect (6,228,762 params)."""
    def elan(hidden: int, c2: int) -> list:
        return _elan(hidden, c2, 2, [-1, -2, -3, -4], tiny=True)

    backbone = [_conv(32, 3, 2, tiny=True), _conv(64, 3, 2, tiny=True), *elan(32, 64),
                [-1, 1, "MP", []], *elan(64, 128), [-1, 1, "MP", []], *elan(128, 256), [-1, 1, "MP", []],
                *elan(256, 512)]
    head = [_conv(256, tiny=True), _conv(256, source=-2, tiny=True),
            [-1, 1, "SP", [5]], [-2, 1, "SP", [9]], [-3, 1, "SP", [13]], [[-1, -2, -3, -4], 1, "Concat", [1]],
            _conv(256, tiny=True), [[-1, -7], 1, "Concat", [1]], _conv(256, tiny=True),
            _conv(128, tiny=True), UPSAMPLE, _conv(128, source=21, tiny=True), [[-1, -2], 1, "Concat", [1]],
            *elan(64, 128),
            _conv(64, tiny=True), UPSAMPLE, _conv(64, source=14, tiny=True), [[-1, -2], 1, "Concat", [1]],
            *elan(32, 64),
            _conv(128, 3, 2, tiny=True), [[-1, 47], 1, "Concat", [1]], *elan(64, 128),
            _conv(256, 3, 2, tiny=True), [[-1, 37], 1, "Concat", [1]], *elan(128, 256),
            _conv(128, 3, source=57, tiny=True), _conv(256, 3, source=65, tiny=True),
            _conv(512, 3, source=73, tiny=True), [[74, 75, 76], 1, "IDetect", ["nc", "anchors"]]]
    return _file(backbone, head, ANCHORS_TINY)


def _p5(stem: int, backbone_elans: tuple, neck: tuple, convs: int, concat: list, out_module: str) -> dict:
    """yolov7 / yolov7x: stem, four ELAN stages joined by MP-1, SPPCSPC, a PANet of ELAN-H blocks, 3x3 outputs
    (``out_module``: RepConv in yolov7, Conv in yolov7x), IDetect.

    ``backbone_elans``: (hidden, c2) of the four ELANs; ``neck``: (SPPCSPC width, P4 neck c2, P3 neck c2,
    P4 out c2, P5 out c2); the neck ELAN-H hidden widths are 4/5 of c2 in yolov7x (3x3s as wide), c2 in yolov7 (3x3s half)."""
    backbone, outs = [_conv(stem, 3), _conv(2 * stem, 3, 2), _conv(2 * stem, 3), _conv(4 * stem, 3, 2)], []
    for stage, (hidden, c2) in enumerate(backbone_elans):
        if stage:
            backbone += _mp1(backbone_elans[stage - 1][1] // 2)
        backbone += _elan(hidden, c2, convs, concat)
        outs.append(len(backbone) - 1)
    spp, c_p4, c_p3, c_o4, c_o5 = neck
    rows = backbone + [[-1, 1, "SPPCSPC", [spp]]]
    spp_row = len(rows) - 1

    def elan_h(c2: int) -> list:
        hidden = c2 * 4 // 5 if convs == 6 else c2
        return _elan(hidden, c2, convs, concat if convs == 6 else [-1, -2, -3, -4, -5, -6],
                     width=hidden if convs == 6 else hidden // 2)

    rows += [_conv(c_p4), UPSAMPLE, _conv(c_p4, source=outs[2]), [[-1, -2], 1, "Concat", [1]], *elan_h(c_p4)]
    neck_p4 = len(rows) - 1
    rows += [_conv(c_p3), UPSAMPLE, _conv(c_p3, source=outs[1]), [[-1, -2], 1, "Concat", [1]], *elan_h(c_p3)]
    neck_p3 = len(rows) - 1
    rows += [*_mp1(c_p3, neck_p4), *elan_h(c_o4)]
    out_p4 = len(rows) - 1
    rows += [*_mp1(c_o4, spp_row), *elan_h(c_o5)]
    out_p5, last = len(rows) - 1, len(rows)
    rows += [[neck_p3, 1, out_module, [2 * c_p3, 3, 1]], [out_p4, 1, out_module, [2 * c_o4, 3, 1]],
             [out_p5, 1, out_module, [2 * c_o5, 3, 1]], [[last, last + 1, last + 2], 1, "IDetect", ["nc", "anchors"]]]
    return _file(backbone, rows[len(backbone):], ANCHORS_P5)


def yolov7() -> dict:
    """yolov7 (training form: RepConv before IDetect): 37,622,682 params."""
    return _p5(32, ((64, 256), (128, 512), (256, 1024), (256, 1024)), (512, 256, 128, 256, 512), 4,
               [-1, -3, -5, -6], "RepConv")


def yolov7x() -> dict:
    """yolov7x: wider stem, ELANs of six 3x3 convs, plain Conv outputs: 71,347,394 params."""
    return _p5(40, ((64, 320), (128, 640), (256, 1280), (256, 1280)), (640, 320, 160, 320, 640), 6,
               [-1, -3, -5, -7, -8], "Conv")


def _p6(stem: int, down: str, stages: tuple, convs: int, concat: list, spp: int, necks: tuple, head_convs: int,
        outputs: tuple, aux: tuple, copies: int = 1) -> dict:
    """The P6 family: ReOrg stem, five downsampling stages (``down``: a stride-2 Conv or DownC) each followed by an
    ELAN (``copies`` = 2: two ELANs on the same input summed by Shortcut, E6E's E-ELAN), SPPCSPC, a PANet of ELAN-H
    blocks over P3-P6, 3x3 lead and auxiliary output convs, IAuxDetect.

    ``stages``: (down width, hidden, c2) per stage; ``necks``: (hidden, c2) of the six neck ELAN-Hs (top-down P5,
    P4, P3, bottom-up P4, P5, P6); ``outputs`` / ``aux``: widths of the lead / auxiliary 3x3 convs, finest first."""
    def block(rows: list, hidden: int, c2: int, n: int, cat: list, width: int) -> None:
        size = n + 4
        rows += _elan(hidden, c2, n, cat, width=width)
        for _ in range(copies - 1):
            rows += [*_elan(hidden, c2, n, cat, width=width, sources=(-size - 1, -size - 2)),
                     [[-1, -size - 1], 1, "Shortcut", [1]]]

    def downsample(rows: list, c2: int) -> None:
        rows.append(_conv(c2, 3, 2) if down == "Conv" else [-1, 1, "DownC", [c2]])

    rows, levels = [[-1, 1, "ReOrg", []], _conv(stem, 3)], []
    for c_down, hidden, c2 in stages:
        downsample(rows, c_down)
        block(rows, hidden, c2, convs, concat, hidden)
        levels.append(len(rows) - 1)
    n_backbone = len(rows)
    rows.append([-1, 1, "SPPCSPC", [spp]])
    top = [len(rows) - 1]  # SPPCSPC, then the top-down neck outputs P5, P4, P3
    aux_sources = [len(rows) - 1]  # E6E's auxiliary heads read the second ELAN, the row before its Shortcut
    head_cat = list(range(-1, -head_convs - 3, -1))
    for (hidden, c2), route in zip(necks[:3], levels[-2::-1]):
        rows += [_conv(c2), UPSAMPLE, _conv(c2, source=route), [[-1, -2], 1, "Concat", [1]]]
        block(rows, hidden, c2, head_convs, head_cat, hidden // 2)
        top.append(len(rows) - 1)
        aux_sources.append(len(rows) - (2 if copies > 1 else 1))
    bottom = [top[-1]]
    for (hidden, c2), target in zip(necks[3:], top[-2::-1]):
        downsample(rows, c2)
        rows.append([[-1, target], 1, "Concat", [1]])
        block(rows, hidden, c2, head_convs, head_cat, hidden // 2)
        bottom.append(len(rows) - 1)
    first = len(rows)
    rows += [_conv(c, 3, source=s) for c, s in zip(outputs, bottom)]
    rows += [_conv(c, 3, source=s) for c, s in zip(aux, aux_sources[::-1])]
    rows.append([list(range(first, len(rows))), 1, "IAuxDetect", ["nc", "anchors"]])
    return _file(rows[:n_backbone], rows[n_backbone:], ANCHORS_P6)


def yolov7_w6() -> dict:
    """yolov7-w6: 82,312,436 params."""
    return _p6(64, "Conv", ((128, 64, 128), (256, 128, 256), (512, 256, 512), (768, 384, 768), (1024, 512, 1024)),
               4, [-1, -3, -5, -6], 512, ((384, 384), (256, 256), (128, 128), (256, 256), (384, 384), (512, 512)), 4,
               (256, 512, 768, 1024), (320, 640, 960, 1280))


_E6_STAGES = ((160, 64, 160), (320, 128, 320), (640, 256, 640), (960, 384, 960), (1280, 512, 1280))
_E6_NECKS = ((384, 480), (256, 320), (128, 160), (256, 320), (384, 480), (512, 640))


def yolov7_e6() -> dict:
    """yolov7-e6: DownC stages, ELANs of six 3x3 convs."""
    return _p6(80, "DownC", _E6_STAGES, 6, [-1, -3, -5, -7, -8], 640, _E6_NECKS, 6,
               (320, 640, 960, 1280), (320, 640, 960, 1280))


def yolov7_d6() -> dict:
    """yolov7-d6: the E6 layout deeper and wider, ELANs of eight 3x3 convs."""
    stages = ((192, 64, 192), (384, 128, 384), (768, 256, 768), (1152, 384, 1152), (1536, 512, 1536))
    necks = ((384, 576), (256, 384), (128, 192), (256, 384), (384, 576), (512, 768))
    return _p6(96, "DownC", stages, 8, [-1, -3, -5, -7, -9, -10], 768, necks, 8,
               (384, 768, 1152, 1536), (384, 768, 1152, 1536))


def yolov7_e6e() -> dict:
    """yolov7-e6e: yolov7-e6 with every ELAN an E-ELAN (two ELANs on one input, summed by Shortcut): 166,408,884."""
    return _p6(80, "DownC", _E6_STAGES, 6, [-1, -3, -5, -7, -8], 640, _E6_NECKS, 6,
               (320, 640, 960, 1280), (320, 640, 960, 1280), copies=2)
