"""`yololab compare`: train every model with every seed under one pinned recipe and report what is noise.

The ablation layer sits on top of the api: ``runner`` trains (or reuses, or resumes) each run in its own process,
``costs`` measures params/GFLOPs/latency, ``statistics`` turns the runs into verdicts, ``report`` and ``plots``
write the results, ``command`` ties them to the ``compare`` settings. Nothing below this package imports it.
"""

from .command import compare, compare_command
from .runner import recipe_keys
from .statistics import RunResult

__all__ = ["RunResult", "compare", "compare_command", "recipe_keys"]
