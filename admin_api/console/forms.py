"""The console's forms, read from ``application/x-www-form-urlencoded`` bodies.

The standard library's parser, rather than python-multipart (FastAPI's ``Form``):
the console's forms are short text fields, none uploads a file.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import Request
from pydantic import ValidationError

from maintd.admin_api.interface import Unprocessable

# A console form is a token, a reason, a few params: far below this.
MAX_BODY = 64 * 1024


class FormTooLarge(ValueError):
    pass


async def read_form(request: Request) -> dict[str, str]:
    """The request's form fields, the first value of each (an empty body: no fields)."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise FormTooLarge(f"form larger than {MAX_BODY} bytes")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def unprocessable(exc: ValidationError) -> Unprocessable:
    """A request model's refusal as the engine's 422: each message names its field."""
    return Unprocessable(
        [
            {
                "type": error["type"],
                "loc": ["body", *error["loc"]],
                # A check of the whole model (one field against another) names no field.
                "msg": f"{'.'.join(map(str, error['loc']))}: {error['msg']}" if error["loc"] else error["msg"],
            }
            for error in exc.errors(include_url=False)
        ]
    )
