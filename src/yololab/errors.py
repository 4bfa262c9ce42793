"""The base class of every error caused by the user's input (the bottom layer: it imports nothing of ours)."""


class UserError(ValueError):
    """A file, value, dataset, checkpoint, plug-in or model YAML the user gave that cannot be used as it is, or a
    run folder another process holds.

    The message names what is wrong (file, key, row) and what is allowed; ``yololab`` prints it as one
    ``yololab: error: ...`` line and exits with code 2. Any other exception is a bug in yololab.
    """


def yaml_error_text(error: Exception) -> str:
    """A YAML parser error in one line: ``line L column C: problem``."""
    mark = getattr(error, "problem_mark", None)
    where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(getattr(error, "problem", None) or error).split())
