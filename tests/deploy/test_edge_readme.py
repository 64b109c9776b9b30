"""What the README says about the edge bundle is what `forgeml deploy bundle` writes."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from deploy_fixtures import bundle_files

from forgeml.cli.deploy import bundle
from forgeml.deploy.edge import DEFAULT_QUANT, GGUF_TYPES

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_readme_names_every_file_and_quantisation_of_the_bundle():
    section = README.split("### On a device, without forgeml", 1)[1].split("\n### ", 1)[0]
    prose = section.split("```", 2)[2]
    named = set(re.findall(r"`([\w.-]+\.(?:gguf|jinja|txt|md|json)|serve)`", prose))
    assert named == bundle_files(DEFAULT_QUANT)
    stated = f"--quant {', '.join(GGUF_TYPES[:-1])} or {GGUF_TYPES[-1]}"
    assert stated in prose.replace("`", "")
    # The example uses the default, which the CLI and the bundle builder share.
    assert f"--quant {DEFAULT_QUANT}" in section
    assert inspect.signature(bundle).parameters["quant"].default.default == DEFAULT_QUANT
