"""Settings' error wording: pydantic's errors as one line naming the profile, the dotted key, what is
wrong and where in params.yaml to fix it (``_Where``: the last layer that sets the key)."""
from __future__ import annotations

import functools
import re
import typing
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from agedistill_core.errors import ConfigError
from agedistill_core.settings.fields import SEED_LIMIT, _short

_BRANCH = re.compile(r"^(int|float|str|bool|none|function-\w+\[.*\]|.*\[.*\])$")  # union / wrapper tags in a loc



def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _clean(loc: tuple) -> tuple:
    return tuple(p for p in loc if isinstance(p, int) or not _BRANCH.match(p))


def _fields_at(cls: Any, loc: tuple) -> list[str]:
    """The valid keys of the mapping at ``loc`` under model/dataclass ``cls`` (for unknown-key errors)."""
    for part in loc:
        if isinstance(part, int):
            continue
        hints = typing.get_type_hints(cls, include_extras=False) if not hasattr(cls, "model_fields") else \
            {k: f.annotation for k, f in cls.model_fields.items()}
        ann = hints.get(part)
        found = None
        stack = [ann]
        while stack:
            t = stack.pop()
            if isinstance(t, type) and (hasattr(t, "model_fields") or hasattr(t, "__dataclass_fields__")):
                found = t
                break
            stack.extend(typing.get_args(t))
        if found is None:
            return []
        cls = found
    if hasattr(cls, "model_fields"):
        return sorted(cls.model_fields)
    return sorted(cls.__dataclass_fields__)


def _what(err: dict, errors: list[dict]) -> str:
    kind, ctx, got = err["type"], err.get("ctx") or {}, f", got {_short(err.get('input'))}"
    if kind == "int_type" and err["loc"][-1:] == ("int",):   # a Number: say what its float branch says
        other = [e for e in errors if e is not err and _clean(e["loc"]) == _clean(err["loc"])]
        if other:
            return f"must be a number{got}" if other[0]["type"] == "float_type" else _what(other[0], errors)
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"must be a whole number{got}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number{got}"
    if kind == "finite_number":
        return f"must be a finite number{got}"
    if kind == "bool_type":
        return f"must be true or false{got}"
    if kind == "string_type":
        return f"must be text{got}"
    if kind in ("tuple_type", "list_type"):
        return f"must be a list{got}"
    if kind in ("dict_type", "model_type", "dataclass_type", "model_attributes_type", "dataclass_exact_type"):
        return f"must be a mapping{got}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"{_short(err.get('input'))} is not one of {expected}"
    bounds = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
              "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}
    if kind in bounds:
        op, key = bounds[kind]
        limit = ctx.get(key)
        shown = "2**32 (seeds are 32-bit)" if op == "<" and limit == SEED_LIMIT else limit
        return f"must be {op} {shown}{got}"
    if kind == "too_short":
        return f"must list at least {ctx.get('min_length')}{got}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_pattern_mismatch":
        return f"must not contain '/'{got}"
    if kind == "missing":
        return "is missing"
    if kind == "value_error":
        return str(ctx.get("error") or err["msg"])
    return f"{err['msg']}{got}"


class _Where:
    """Says where a setting came from: the dotted params.yaml key (of the last layer that sets it)."""

    def __init__(self, path: Path, profile: str, layers: list[tuple[str, dict]], overrides: dict | None):
        self.path, self.profile, self.layers, self.overrides = path, profile, layers, overrides or {}

    @staticmethod
    def _has(tree: Any, loc: tuple) -> bool:
        for part in loc:
            if isinstance(part, int):
                if not isinstance(tree, list) or part >= len(tree):
                    return False
            elif not isinstance(tree, dict) or part not in tree:
                return False
            tree = tree[part]
        return True

    def origin(self, loc: tuple) -> str:
        for depth in range(len(loc), 0, -1):
            if self._has(self.overrides, loc[:depth]):
                return "given on the command line"
            for prefix, layer in reversed(self.layers):
                if self._has(layer, loc[:depth]):
                    return f"fix it in {self.path.name} ({_dotted((prefix, *loc[:depth]))})"
        return f"fix it in {self.path.name} (profiles.{self.profile})"

    def error(self, loc: tuple, what: str) -> ConfigError:
        return ConfigError(f"{_dotted((self.profile, *loc))}: {what}; {self.origin(loc)}")

    def from_pydantic(self, exc: ValidationError, root: Any, prefix: tuple = ()) -> ConfigError:
        """The first of pydantic's errors in one line (all the unknown keys of one mapping at once)."""
        errors = exc.errors(include_url=False)
        first = errors[0]
        loc = _clean(first["loc"])
        if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            unknown = sorted({str(_clean(e["loc"])[-1]) for e in errors
                              if e["type"] == first["type"] and _clean(e["loc"])[:-1] == loc[:-1]})
            valid = _fields_at(root, loc[:-1])
            parent = (*prefix, *loc[:-1])
            return ConfigError(f"{_dotted((self.profile, *parent))}: unknown key(s) {', '.join(unknown)}"
                               + (f"; valid keys: {', '.join(valid)}" if valid else "")
                               + f"; {self.origin((*parent, unknown[0]))}")
        return self.error((*prefix, *loc), _what(first, errors))


@functools.lru_cache(maxsize=None)
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def _validate(cls: type, raw: Any, where: str) -> Any:
    """One section (e.g. a source's merged ``faces``) validated; ``where`` prefixes the error."""
    try:
        return _adapter(cls).validate_python(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = _clean(err["loc"])
        if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            what = f"unknown key(s) {loc[-1]}; valid keys: {', '.join(_fields_at(cls, loc[:-1]))}"
            loc = loc[:-1]
        else:
            what = _what(err, exc.errors(include_url=False))
        raise ConfigError(f"{_dotted((where, *loc))}: {what}; fix it in params.yaml") from None
