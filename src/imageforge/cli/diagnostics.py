"""`imageforge check` and `imageforge selftest`: what is installed, and whether it works end to end."""

from __future__ import annotations

import base64
import importlib.metadata
import io
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from imageforge.cli.settings import load_settings

if TYPE_CHECKING:
    from imageforge.config import Settings

_PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "peft", "safetensors", "fastapi", "uvicorn")


def check() -> None:
    """Print the effective settings and what is installed, then exit."""
    raise typer.Exit(print_check(load_settings()))


def selftest() -> None:
    """Generate, edit, inpaint and hit the cache with the offline `tiny` model, in a temporary folder."""
    raise typer.Exit(run_selftest(load_settings()))


def print_check(settings: Settings) -> int:
    """Print the effective settings, installed versions and the device; 0 when the heavy stack imports."""
    typer.echo("imageforge check\n\nsettings (environment and .env):")
    for name, value in settings.model_dump().items():
        if name == "api_keys":
            value = [entry[0] for entry in value]  # the names only: never print a key
        typer.echo(f"  {name:<16} {value}")
    typer.echo("\npackages:")
    for package in _PACKAGES:
        try:
            version = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            version = "NOT INSTALLED"
        typer.echo(f"  {package:<16} {version}")
    from imageforge.errors import FolderUnwritable

    try:
        from imageforge.bootstrap import build_service

        info = build_service(settings).health().model_dump()
    except FolderUnwritable as exc:
        typer.secho(f"\nerror [{exc.code}]: {exc.message}", fg="red")
        typer.echo(f"hint: {exc.hint}")
        return 1
    except Exception as exc:
        typer.secho(f"\nheavy stack: NOT importable ({type(exc).__name__}: {exc})", fg="red")
        return 1
    typer.echo(
        f"\nheavy stack: importable; device {info['device']} ({info['dtype']}), cuda={info['cuda']} mps={info['mps']}"
    )
    ollama = info["ollama"]
    state = "reachable" if ollama["reachable"] else "not reachable (prompt assist will pass prompts through)"
    typer.echo(f"ollama: {ollama['url']} {state}; model {ollama['model']} available={ollama['model_available']}")
    typer.echo(f"stable-diffusion.cpp engine: {_sdcpp_server(settings)}")
    return 0


def _sdcpp_server(settings: Settings) -> str:
    """Where the sd.cpp engine's `sd-server` is, or how to get one."""
    from imageforge.engine.backends.sdcpp.binary import find_server

    configured = None if settings.sdcpp_server is None else settings.resolve(settings.sdcpp_server)
    found = find_server(configured, flavour=settings.sdcpp_build)
    if found is not None:
        return str(found)
    if configured is not None:
        return f"NOT FOUND: IMAGEFORGE_SDCPP_SERVER names {configured}, which is not an executable file"
    return f"not installed (`./start.sh sdcpp-build` builds the {settings.sdcpp_build} flavour)"


def run_selftest(settings: Settings) -> int:
    """Exercise the real engine on the `tiny` model through the HTTP app; prints `[selftest]` lines."""
    from fastapi.testclient import TestClient
    from PIL import Image

    from imageforge.bootstrap import build_service
    from imageforge.storage.outputs import read_record
    from imageforge.transports.http.app import create_app

    def say(line: str) -> None:
        typer.echo(f"[selftest] {line}")

    with tempfile.TemporaryDirectory(prefix="imageforge-selftest-") as scratch:
        root = Path(scratch)
        trial = settings.model_copy(
            update={"default_model": "tiny", "output_dir": root / "outputs", "cache_dir": root / "cache"}
        )
        try:
            # A host name the app answers to: TestClient's default, testserver, is a foreign Host.
            with TestClient(create_app(build_service(trial)), base_url="http://localhost") as client:
                health = client.get("/health").json()
                say(f"health: device {health['device']} ({health['dtype']}), version {health['version']}")
                models = client.get("/models").json()["models"]
                say(f"catalog: {len(models)} models ({', '.join(m['key'] for m in models)})")
                started = time.perf_counter()
                body = {"prompt": "selftest", "seed": 7, "width": 256, "height": 256, "return_mode": "both"}
                first = _ok(client.post("/generate", json=body).json(), "generate")
                say(f"generate: {first['width']}x{first['height']} in {time.perf_counter() - started:.2f}s")
                png = base64.b64decode(first["image_base64"])
                record = read_record(png)
                _check(record.get("seed") == 7 and Path(first["output_path"]).is_file(), "PNG metadata and file")
                say("output: PNG written with its parameters embedded and a JSON sidecar")
                _check(_ok(client.post("/generate", json=body).json(), "cache")["cached"], "second request cached")
                say("cache: identical seeded request answered from the cache")
                edit = _ok(
                    client.post("/edit", json={"prompt": "selftest", "init_image": first["image_base64"]}).json(),
                    "edit",
                )
                say(f"edit: {edit['steps']} steps at strength {edit['strength']}")
                mask = io.BytesIO()
                Image.new("L", (256, 256), 255).save(mask, format="PNG")
                inpaint = {
                    "prompt": "selftest",
                    "init_image": first["image_base64"],
                    "mask_image": base64.b64encode(mask.getvalue()).decode(),
                }
                _ok(client.post("/inpaint", json=inpaint).json(), "inpaint")
                say("inpaint: ok")
                bad = client.post("/generate", json={"prompt": "x", "width": 100}).json()
                _check(bad.get("error", {}).get("code") == "invalid_request", "bad size refused")
                say("errors: a bad size is refused with invalid_request")
        except AssertionError as exc:
            say(f"FAIL: {exc}")
            return 1
    say("ALL PASS")
    return 0


def _ok(payload: dict[str, Any], what: str) -> dict[str, Any]:
    _check(payload.get("ok") is True, f"{what}: {payload.get('error')}")
    return payload


def _check(condition: object, what: str) -> None:
    if not condition:
        raise AssertionError(what)
