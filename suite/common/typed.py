"""Typed construction of a dataclass of settings, with one-line errors that name the setting."""

from __future__ import annotations

from typing import Any


def typed(prefix: str, config_cls: Any, values: dict[str, Any]) -> Any:
    """``config_cls(**values)`` with every value checked against the field's type and range
    (pydantic reads the dataclass annotations, e.g. ``Annotated[int, Field(ge=1)]``): ``2.5``
    is not an int, ``"abc"`` not a number, ``true`` only a bool. The first problem is a
    ValueError of one line naming ``prefix`` + the field (``method.rank``)."""
    from pydantic import TypeAdapter, ValidationError

    fields = config_cls.__dataclass_fields__
    for name, value in values.items():
        if isinstance(value, bool) and "bool" not in str(fields[name].type):
            raise ValueError(f"{prefix}{name}: must be a number, not {str(value).lower()}")
    try:
        return TypeAdapter(config_cls).validate_python(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(p) for p in error["loc"][:1])
        message = error["msg"].replace("Input should be", "must be")
        raise ValueError(f"{prefix}{name}: {message} (got {error.get('input')!r})") from None
