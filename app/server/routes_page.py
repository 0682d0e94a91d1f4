"""The routes a person or a supervisor opens: the chat page and the health check.

Health answers while the model still loads (503), so a supervisor can wait for it; the page is one
static file with no build step and no CDN.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse

PAGE = Path(__file__).resolve().parent / "static" / "chat.html"

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    current = request.app.state.assistant
    if current is None:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ok", "model": current.engine.model_name})


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(PAGE, media_type="text/html; charset=utf-8")
