"""Errors a user can cause. The CLI prints them in one line and exits non-zero."""


class EffnetError(ValueError):
    """A user-caused error whose message says how to fix it."""


class ParameterError(EffnetError):
    """A bad argument. The message names it as the Python parameter (``eval_every``); the CLI
    names the flag that sets it instead (``--eval-every``, :meth:`with_flags`)."""

    def __init__(self, message: str, *params: str) -> None:
        super().__init__(message)
        self.params = params

    def __reduce__(self):  # from a worker process with its parameters (args holds the message)
        return type(self), (str(self), *self.params)

    def with_flags(self, flags: dict[str, str]) -> str:
        """The message with each parameter replaced by its flag (`flags[name]` or
        ``--name-with-dashes``): its Python spelling ``name='value'`` becomes ``--flag value``
        (``name=False``: ``--no-flag``) where the message has one, else the name as a whole
        word becomes the flag."""
        import re

        text = str(self)
        for name in self.params:
            flag = flags.get(name, "--" + name.replace("_", "-"))
            keyword = re.compile(rf"(?<![\w/.-]){re.escape(name)}="
                                 r"(?:'([^']*)'|\"([^\"]*)\"|([\w./-]+))")
            if keyword.search(text):
                text = keyword.sub(lambda m, flag=flag: _flag_value(flag, m), text)
            else:
                text = re.sub(rf"(?<![\w/.-]){re.escape(name)}(?![\w/-])", flag, text)
        return text


def _flag_value(flag: str, match) -> str:
    """`--flag value` for a matched ``name=value``; `--no-flag` for False, `--flag` for True."""
    value = next(g for g in match.groups() if g is not None)
    if value == "False":
        return "--no-" + flag.removeprefix("--")
    return flag if value == "True" else f"{flag} {value}"


def check_int(value: object, name: str, minimum: int = 0) -> int:
    """`value` as an int if it is a whole number >= `minimum` (not a bool, float or string);
    else an EffnetError naming `name`."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise EffnetError(f"{name} must be an integer >= {minimum}, got {value!r} "
                          f"({type(value).__name__})")
    if value < minimum:
        raise EffnetError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_number(value: object, name: str, low: float, high: float = float("inf"),
                 low_open: bool = False) -> float:
    """`value` as a float if it is a finite real number in [low, high] ((low, high] with
    `low_open`); else an EffnetError naming `name`."""
    import math
    import numbers

    span = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise EffnetError(f"{name} must be a number in {span}, got {value!r} "
                          f"({type(value).__name__})")
    v = float(value)
    if not (math.isfinite(v) and (v > low if low_open else v >= low) and v <= high):
        raise EffnetError(f"{name} must be a number in {span}, got {value!r}")
    return v
