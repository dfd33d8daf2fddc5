"""Error bodies, one rendering for the FastAPI application and the fast path, so both answer
byte for byte alike."""

from __future__ import annotations

import json
from typing import Any

from fastapi.encoders import jsonable_encoder


def render(content: Any) -> bytes:
    """JSON as FastAPI's JSONResponse renders it (compact, UTF-8, no NaN)."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


def validation_body(errors: Any) -> bytes:
    """The 422 body: FastAPI's, ``{"detail": [errors]}``. An error's ``input`` echoes what the
    client sent, which JSON may not be able to carry back (NaN, a lone surrogate, bytes that
    are not UTF-8, nesting too deep to encode): FastAPI would then fail with a 500; here the
    errors then go without their ``input``, all of them."""
    try:
        return render({"detail": jsonable_encoder(errors)})
    except (ValueError, RecursionError):  # UnicodeEncodeError/DecodeError are ValueErrors
        return render({"detail": jsonable_encoder(
            [{key: value for key, value in error.items() if key != "input"}
             for error in errors])})
