"""Images in the llama.cpp engine: llama.cpp's own vision code (mtmd) over the export's
`mmproj` GGUF turns an image into the embeddings the text model reads.

    reader = ImageReader(Path("mmproj-f16.gguf"), slots, threads=2)
    embeddings = reader.embeddings(pixels, positions)   # [positions, n_embd]

The image arrives as the chat layer prepared it for every engine (image_inputs.py:
resized to whole image tokens within the tower's size, normalised). Those pixels go back
to the resized RGB bytes exactly (they were bytes / 255, normalised in float32), and
mtmd keeps an image whose sides are whole tokens as it is, once its own token budget
(8 to 1024 tokens for Pixtral by default) is opened to every size the tower takes. So
llama.cpp sees the very pixels the transformers engine sees, and gives the same grid.

mtmd's Pixtral output is the image tokens row by row with the `[IMG_BREAK]` embedding
between rows (from the mmproj, written at export): exactly the span of the prompt from
an image's first `[IMG]` to just before its `[IMG_END]`, which stays an ordinary token.
The engine decodes these embeddings into the slot where the prompt has that span.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np

from forgeml.core.errors import ForgeError, InputError
from forgeml.models.image_inputs import IMAGE_MEAN, IMAGE_STD

MAX_IMAGE_TOKENS = 1 << 16  # the tower's own size bounds an image; mtmd must not shrink it


def image_rgb(pixels: np.ndarray) -> np.ndarray:
    """[3, h, w] normalised pixels back to the [h, w, 3] uint8 image they came from."""
    mean = np.asarray(IMAGE_MEAN, np.float32)
    std = np.asarray(IMAGE_STD, np.float32)
    rgb = (pixels.transpose(1, 2, 0) * std + mean) * np.float32(255)
    return np.ascontiguousarray(np.rint(rgb).clip(0, 255).astype(np.uint8))


class ImageReader:
    """An mtmd context over one mmproj file, tied to the slots' text model."""

    def __init__(self, mmproj: Path, slots: Any, threads: int = 1) -> None:
        import llama_cpp._logger as _logger  # submodules: llama_cpp_slots.load_llama_cpp
        import llama_cpp.mtmd_cpp as mtmd_cpp

        self._mtmd = mtmd_cpp
        if not mmproj.is_file():
            raise InputError(f"no mmproj GGUF at {mmproj}", path=mmproj)
        # llama-cpp-python's log callback: quiet unless verbose, as for the text model.
        mtmd_cpp.mtmd_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.warmup = False
        params.n_threads = threads
        params.image_min_tokens = 1
        params.image_max_tokens = MAX_IMAGE_TOKENS
        self._ctx = mtmd_cpp.mtmd_init_from_file(str(mmproj).encode(), slots.model_pointer, params)
        if not self._ctx:
            raise ForgeError(
                f"llama.cpp could not load the vision tower {mmproj.name}",
                hint="export the model again with the installed llama-cpp-python",
            )
        if not mtmd_cpp.mtmd_support_vision(self._ctx):
            self.close()
            raise ForgeError(f"{mmproj.name} holds no vision tower llama.cpp can run")
        self.n_embd = slots.n_embd
        self._marker = mtmd_cpp.mtmd_default_marker()

    def embeddings(self, pixels: np.ndarray, positions: int) -> np.ndarray:
        """The image's embeddings [positions, n_embd], float32: `positions` is the image's
        span in the prompt (rows x (cols + 1) - 1), which llama.cpp's grid must fill."""
        mtmd = self._mtmd
        rgb = image_rgb(pixels)
        height, width = rgb.shape[:2]
        buffer = (ctypes.c_uint8 * rgb.size).from_buffer(bytearray(rgb.tobytes()))
        bitmap = mtmd.mtmd_bitmap_init(width, height, buffer)
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            text = mtmd.mtmd_input_text()
            text.text, text.text_len = self._marker, len(self._marker)
            text.add_special, text.parse_special = False, True
            bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
            if mtmd.mtmd_tokenize(self._ctx, chunks, ctypes.byref(text), bitmaps, 1) != 0:
                raise RuntimeError("llama.cpp could not tokenize the image")
            chunk = next(
                mtmd.mtmd_input_chunks_get(chunks, index)
                for index in range(mtmd.mtmd_input_chunks_size(chunks))
                if mtmd.mtmd_input_chunk_get_type(mtmd.mtmd_input_chunks_get(chunks, index))
                == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE
            )
            count = int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
            if count != positions:  # the grids must agree, or the prompt would shift
                raise RuntimeError(
                    f"llama.cpp reads a {width} x {height} px image as {count} positions, "
                    f"the prompt holds {positions}"
                )
            if mtmd.mtmd_encode_chunk(self._ctx, chunk) != 0:
                raise RuntimeError("llama.cpp could not encode the image")
            pointer = ctypes.cast(
                mtmd.mtmd_get_output_embd(self._ctx), ctypes.POINTER(ctypes.c_float)
            )
            return np.ctypeslib.as_array(pointer, shape=(count, self.n_embd)).copy()
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            mtmd.mtmd_bitmap_free(bitmap)

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self._mtmd.mtmd_free(self._ctx)
            self._ctx = None

    def __del__(self) -> None:
        self.close()
