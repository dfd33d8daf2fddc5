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
    client sent, which JSON may not be able to carry back (NaN, a lone surrogate): FastAPI
    would then fail with a 500; here those errors go without their ``input``."""
    detail = jsonable_encoder(errors)
    try:
        return render({"detail": detail})
    except (ValueError, UnicodeEncodeError):
        return render({"detail": [{key: value for key, value in error.items() if key != "input"}
                                  for error in detail]})
