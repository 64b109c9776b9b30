#!/usr/bin/env python3
"""Serve this bundle's model with an OpenAI-compatible API (llama.cpp, no forgeml, no torch).

    python -m venv .venv && .venv/bin/pip install -r requirements.txt
    PATH=$PWD/.venv/bin:$PATH ./serve --host 127.0.0.1 --port 8080
    ./serve --verify          # check every file against bundle.json's sha256, then exit

The server is llama-cpp-python's own (`llama_cpp.server`: /v1/chat/completions,
/v1/completions, /v1/models, streaming). It decodes one request at a time: others wait
on its lock and run in turn, each to the end (this launcher turns off its default of
cutting a streaming answer short when another request arrives). The chat template is
the bundle's chat_template.jinja, registered as chat format "forgeml".

A vision-language model's bundle also holds its vision tower (the `mmproj` GGUF) and
serves `image_url` parts through llama.cpp's mtmd: data URLs only (nothing is fetched),
each image resized to whole image tokens within the tower's size as forgeml does, so
llama.cpp sees the pixels forgeml's own engines see. Bad images get a 400.

This file is written by `forgeml deploy bundle --target edge` and must run with only
requirements.txt installed: it imports nothing from forgeml.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import ctypes
import hashlib
import io
import json
import math
import os
import sys
from pathlib import Path

BUNDLE = Path(__file__).resolve().parent
MANIFEST = BUNDLE / "bundle.json"
CHAT_FORMAT = "forgeml"
# llama.cpp's KV cache types by name (ggml_type values).
KV_CACHE_TYPES = {"f32": 0, "f16": 1}
# Bounds on hostile images, as forgeml's server has them.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
IMAGE_FORMATS = ["PNG", "JPEG", "WEBP", "GIF", "BMP"]


class RequestRefused(ValueError):
    """A request the bundle cannot serve as sent: answered 400, not 500."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def parse_args(manifest: dict, argv: list[str] | None) -> argparse.Namespace:
    serving = manifest["serving"]
    parser = argparse.ArgumentParser(prog="./serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="Listen address (127.0.0.1).")
    parser.add_argument("--port", type=int, default=8080, help="Listen port (8080).")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: every core allowed)."
    )
    parser.add_argument(
        "--n-ctx",
        type=int,
        default=serving["n_ctx"],
        help=f"Context length in tokens (default {serving['n_ctx']}; "
        f"the model was trained on {serving['context_length']}).",
    )
    parser.add_argument(
        "--kv-cache",
        choices=sorted(KV_CACHE_TYPES),
        default=serving["kv_cache"],
        help=f"KV cache type (default {serving['kv_cache']}: the answers forgeml's own "
        "llama.cpp engine gives; f16 halves its memory).",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("EDGE_API_KEY"), help="Require this bearer key."
    )
    parser.add_argument(
        "--max-images",
        type=int,
        default=8,
        help="Images one chat request may carry (8; a vision model's bundle only).",
    )
    parser.add_argument(
        "--verify", action="store_true", help="Check every file's sha256, then exit."
    )
    return parser.parse_args(argv)


def verify(manifest: dict) -> list[str]:
    """The files that are missing or differ from the manifest's sha256."""
    bad = []
    for name, expected in sorted(manifest["files"].items()):
        path = BUNDLE / name
        if not path.is_file():
            bad.append(f"{name}: missing")
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected["sha256"]:
            bad.append(f"{name}: sha256 differs from bundle.json")
    return bad


def image_parts(messages: list) -> list[tuple[str, dict]]:
    """(where, part) of every image part of a chat request."""
    return [
        (f"messages[{index}].content[{position}]", part)
        for index, message in enumerate(messages)
        if isinstance(message.get("content"), list)
        for position, part in enumerate(message["content"])
        if isinstance(part, dict) and part.get("type") in ("image_url", "image")
    ]


def register_chat_template(manifest: dict) -> None:
    """The bundle's template as chat format "forgeml" (rendered with add_generation_prompt)."""
    from llama_cpp.llama_chat_format import (
        Jinja2ChatFormatter,
        LlamaChatCompletionHandlerRegistry,
    )

    chat = manifest["chat"]
    formatter = Jinja2ChatFormatter(
        template=(BUNDLE / manifest["chat_template"]).read_text(encoding="utf-8"),
        eos_token=chat["eos_token"],
        bos_token=chat["bos_token"],
        stop_token_ids=[chat["eos_token_id"]],
    )
    render = formatter.to_chat_handler()

    def text_only(**request):
        if found := image_parts(request["messages"]):
            raise RequestRefused(
                f"{manifest['model']['name']} takes text only; this request has "
                f"{len(found)} image(s)",
                param=found[0][0],
            )
        return render(**request)

    LlamaChatCompletionHandlerRegistry().register_chat_completion_handler(
        CHAT_FORMAT, text_only, overwrite=True
    )


def resized_size(width: int, height: int, vision: dict) -> tuple[int, int]:
    """(width, height) after Pixtral's resize as forgeml does it: fit the tower's
    `image_size`, round each side up to whole image tokens (patch x spatial merge)."""
    longest, side = vision["image_size"], vision["patch_size"] * vision["spatial_merge_size"]
    ratio = max(height / longest, width / longest)
    if ratio > 1:
        height, width = math.floor(height / ratio), math.floor(width / ratio)
    return ((width - 1) // side + 1) * side, ((height - 1) // side + 1) * side


def image_rgb(data: bytes, vision: dict, where: str):
    """The decoded image, RGB, resized as forgeml resizes it: (width, height, bytes)."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_IMAGE_BYTES:
        raise RequestRefused(f"the image is over {MAX_IMAGE_BYTES // 2**20} MiB", where)
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except UnidentifiedImageError as error:
        raise RequestRefused("not a PNG, JPEG, WebP, GIF or BMP image", where) from error
    except (OSError, ValueError, SyntaxError) as error:  # a header cut short or garbled
        raise RequestRefused(f"the image cannot be decoded: {error}", where) from error
    width, height = image.size  # read from the header: nothing decoded yet
    if width * height > MAX_IMAGE_PIXELS:
        raise RequestRefused(
            f"the image has {width} x {height} pixels, over the {MAX_IMAGE_PIXELS:,} "
            "allowed; scale it down before sending",
            where,
        )
    try:
        image.load()
        rgb = image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as error:
        raise RequestRefused(f"the image cannot be decoded: {error}", where) from error
    size = resized_size(width, height, vision)
    if min(size) == 0:  # a sliver that shrinks to no pixel row or column
        raise RequestRefused(f"the image is {width} x {height} pixels: too thin to read", where)
    resized = rgb.resize(size, resample=Image.Resampling.BICUBIC)
    return size[0], size[1], resized.tobytes()


def image_data(url: object, where: str) -> bytes:
    """The bytes of a base64 data URL; anything else is refused (the bundle fetches
    nothing: it runs offline)."""
    if not isinstance(url, str) or not url:
        raise RequestRefused(
            'an image part needs image_url: {"url": "data:image/png;base64,..."}', where
        )
    if not url.startswith("data:"):
        raise RequestRefused(
            "only data: URLs are taken (this server fetches nothing); send the image "
            "inline as data:image/png;base64,...",
            where,
        )
    header, _, payload = url.partition(",")
    if not header.endswith(";base64") or len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise RequestRefused("an image data URL must be base64 and at most 20 MiB", where)
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error as error:
        raise RequestRefused(f"the image's base64 does not decode: {error}", where) from error


def install_vision_handler(manifest: dict, max_images: int) -> None:
    """llama-cpp-python's mtmd chat handler, made to render the bundle's template, take
    data URLs only, resize as forgeml does and keep what it is given: its server builds
    the handler for chat format "mtmd" by this name."""
    from llama_cpp import llama_chat_format, mtmd_cpp

    vision = manifest["vision"]
    # The stock handler hands the template llama.cpp's detokenized BOS and EOS, which are
    # empty strings for control tokens: set the real ones first.
    chat = manifest["chat"]
    template = (
        f"{{%- set bos_token = {json.dumps(chat['bos_token'])} -%}}"
        f"{{%- set eos_token = {json.dumps(chat['eos_token'])} -%}}"
        + (BUNDLE / manifest["chat_template"]).read_text(encoding="utf-8")
    )
    stock = llama_chat_format.MTMDChatHandler

    class BundleVisionHandler(stock):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._prepared: dict[bytes, tuple[int, int, bytes]] = {}  # this request's images

        def _init_mtmd_context(self, llama_model) -> None:
            # The stock handler keeps mtmd's default token budget (8-1024 for Pixtral),
            # which would shrink an image forgeml keeps: open it; the resize bounds it.
            if self.mtmd_ctx is not None:
                return
            self.verbose = llama_model.verbose
            params = mtmd_cpp.mtmd_context_params_default()
            params.use_gpu, params.print_timings, params.warmup = False, False, False
            params.n_threads = llama_model.n_threads
            params.image_min_tokens, params.image_max_tokens = 1, 1 << 16
            self.mtmd_ctx = mtmd_cpp.mtmd_init_from_file(
                self.clip_model_path.encode(), llama_model.model, params
            )
            if not self.mtmd_ctx:
                raise RuntimeError(f"llama.cpp could not load {self.clip_model_path}")

            def free() -> None:
                if self.mtmd_ctx is not None:
                    mtmd_cpp.mtmd_free(self.mtmd_ctx)
                    self.mtmd_ctx = None

            llama_model._stack.callback(free)

        def _get_chat_template(self, llama_model) -> str:
            return template

        def load_image(self, image_url: str) -> bytes:
            return image_data(image_url, "image_url")

        def _create_bitmap_from_bytes(self, image_bytes: bytes):
            # Decoded and resized already by __call__'s checks (requests run one at a time)
            prepared = self._prepared.pop(image_bytes, None)
            width, height, rgb = prepared or image_rgb(image_bytes, vision, "image_url")
            buffer = (ctypes.c_uint8 * len(rgb)).from_buffer(bytearray(rgb))
            bitmap = mtmd_cpp.mtmd_bitmap_init(width, height, buffer)
            if bitmap is None:
                raise RuntimeError("llama.cpp could not take the image")
            return bitmap

        def __call__(self, **request):
            found = image_parts(request["messages"])
            if len(found) > max_images:
                raise RequestRefused(
                    f"{len(found)} images; this server takes at most {max_images} per request",
                    found[max_images][0],
                )
            # (llama-cpp-python's schema takes images in user messages only)
            self._prepared = {}
            for where, part in found:
                value = part.get("image_url")
                url = value.get("url") if isinstance(value, dict) else value
                # a bad image is refused here, naming its part, before the model runs
                data = image_data(url, where)
                self._prepared[data] = image_rgb(data, vision, where)
            try:
                return super().__call__(**request)
            finally:
                self._prepared = {}

    llama_chat_format.MTMDChatHandler = BundleVisionHandler


def field_path(loc: tuple) -> str:
    """("body", "messages", 1, "ChatCompletionRequestUserMessage", "content") as
    messages[1].content: the request's own field, without pydantic's union branches."""
    path = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not part[:1].isupper():
            path += f".{part}" if path else part
    return path


def schema_refusal(error) -> RequestRefused:
    """A request the server's schema rejects, said in a few lines rather than pydantic's
    every union branch."""
    # A message that fits no branch of the role union fails every branch: its role is
    # another branch's, fields another needs are missing. What is left is the point.
    errors = error.errors()
    errors = [e for e in errors if e["type"] not in ("literal_error", "missing")] or errors
    problems = dict.fromkeys(f"{field_path(e['loc'])}: {e['msg']}" for e in errors)
    first = field_path(errors[0]["loc"]) if errors else None
    shown = list(problems)[:3]
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return RequestRefused("the request does not fit the API: " + "; ".join(shown) + more, first)


def answer_refusals_with_400() -> None:
    """llama-cpp-python's server answers every error 500, a malformed request included; a
    request refused for what it holds is the client's to fix: 400 with the reason and the
    field."""
    from fastapi.exceptions import RequestValidationError
    from llama_cpp.server.errors import ErrorResponse, RouteErrorHandler

    wrapped = RouteErrorHandler.error_message_wrapper

    def error_message_wrapper(self, error, body=None):
        if isinstance(error, RequestValidationError):
            error = schema_refusal(error)
        if isinstance(error, RequestRefused):
            return 400, ErrorResponse(
                message=str(error), type="invalid_request_error", param=error.param, code=None
            )
        return wrapped(self, error, body)

    RouteErrorHandler.error_message_wrapper = error_message_wrapper


def main(argv: list[str] | None = None) -> int:
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    args = parse_args(manifest, argv)
    if args.verify:
        bad = verify(manifest)
        for line in bad:
            print(f"error: {line}", file=sys.stderr)
        print("bundle intact" if not bad else f"{len(bad)} file(s) damaged", file=sys.stderr)
        return 1 if bad else 0
    try:
        import uvicorn
        from llama_cpp.server.app import create_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError as error:
        print(
            f"error: {error.name} is not installed: pip install -r {BUNDLE / 'requirements.txt'}",
            file=sys.stderr,
        )
        return 2
    answer_refusals_with_400()
    vision = manifest.get("vision")
    if vision:
        install_vision_handler(manifest, args.max_images)
    else:
        register_chat_template(manifest)
    threads = args.threads or len(os.sched_getaffinity(0))
    server = ServerSettings(
        host=args.host, port=args.port, api_key=args.api_key, interrupt_requests=False
    )
    model = ModelSettings(
        model=str(BUNDLE / manifest["gguf"]),
        model_alias=manifest["model"]["name"],
        n_ctx=args.n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        type_k=KV_CACHE_TYPES[args.kv_cache],
        type_v=KV_CACHE_TYPES[args.kv_cache],
        chat_format="mtmd" if vision else CHAT_FORMAT,
        clip_model_path=str(BUNDLE / vision["mmproj"]) if vision else None,
        verbose=False,
    )
    app = create_app(server_settings=server, model_settings=[model])
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
