"""LoRA adapters served over their base: one copy of the base weights, base and adapter
rows in one batch, the same greedy tokens as the adapter merged into its base, and
adapters loaded (and unloaded) on demand."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from peft import PeftModel
from pydantic import Field
from safetensors import safe_open
from serving_fixtures import ServerThread, register_tiny_model
from transformers import AutoTokenizer

from forgeml.core.context import StageContext, record_artifact
from forgeml.core.errors import InputError
from forgeml.core.runs import run_stage
from forgeml.core.schema import Deployment
from forgeml.core.stages import StageParams, stage
from forgeml.core.workspace import Workspace
from forgeml.models.sizes import load_model
from forgeml.serve import ServeSettings, create_app
from forgeml.serve.auth import create_key
from forgeml.serve.engine.lora import BASE_ROW
from forgeml.serve.engine.transformers import TransformersEngine
from forgeml.serve.served_adapters import AdapterEngine
from forgeml.train.finetune_params import MISTRAL4_LORA_TARGETS

BASE = "lora-base"
ADAPTERS = ("lora-a", "lora-b")
TEXTS = ["def", "The with statement is used", "Exceptions are raised when an error occurs"]
MAX_TOKENS = 12

# PEFT 0.21 asks transformers 5 the deprecated `is_gradient_checkpointing`.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")


class RandomLoraParams(StageParams):
    rank: int = Field(default=4, description="LoRA rank.")


@stage(
    "test.serve_lora",
    params=RandomLoraParams,
    inputs={"model": "model"},
    outputs={"adapter": "adapter"},
)
def random_lora(ctx: StageContext, params: RandomLoraParams):
    """Stand-in for train.sft_lora (seconds, not minutes): a LoRA on every mistral4 target
    with a random, non-zero B, saved with the base's tokenizer as the training stages do."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(ctx.seed)
    base_dir = ctx.input_path("model")
    config = LoraConfig(
        r=params.rank,
        lora_alpha=params.rank,
        target_modules=list(MISTRAL4_LORA_TARGETS),
        init_lora_weights=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        adapted = get_peft_model(load_model(base_dir, dtype=torch.float32), config)
    writer = ctx.new_artifact("adapter")
    adapted.save_pretrained(writer.path)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(writer.path)
    return {"adapter": ctx.commit(writer)}


def artifact_dir(workspace: Workspace, name: str) -> Path:
    return workspace.root / workspace.registry.resolve(name).path


def parameter_count(directory: Path, filename: str) -> int:
    with safe_open(directory / filename, "pt") as weights:
        return sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())  # noqa: SIM118


def held_parameters(model: torch.nn.Module) -> int:
    """Parameters a model holds, each storage counted once."""
    return sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())


@pytest.fixture(scope="module")
def lora_workspace(tmp_path_factory) -> Workspace:
    """A tiny base model and two adapters trained on it (by runs: lineage names the base)."""
    workspace = Workspace.init(tmp_path_factory.mktemp("lora") / "ws")
    # Wider init (std 0.1, as the export tests): the top logit leads by ~0.2, far above the
    # ~1e-6 by which merged and unmerged LoRA differ, so greedy tokens are comparable.
    base = register_tiny_model(workspace, BASE, initializer_range=0.1)
    for seed, name in enumerate(ADAPTERS, start=1):
        made = run_stage(workspace, "test.serve_lora", {}, {"model": base}, seed=seed, quiet=True)
        with workspace.registry.session() as session:
            workspace.registry.add_version(session, name, made.outputs["adapter"])
    yield workspace
    workspace.close()


@pytest.fixture(scope="module")
def key(lora_workspace) -> str:
    return create_key(lora_workspace, "lora-tests", "inference")[1]


@pytest.fixture(scope="module")
def prompts(lora_workspace) -> list[list[int]]:
    tokenizer = AutoTokenizer.from_pretrained(artifact_dir(lora_workspace, BASE))
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in TEXTS]


@pytest.fixture(scope="module")
def expected(lora_workspace, prompts) -> dict[str, list[list[int]]]:
    """Greedy tokens per model and prompt from `generate`, one request at a time, with
    each adapter merged into its own copy of the base (`merge_and_unload`)."""
    base_dir = artifact_dir(lora_workspace, BASE)
    models = {BASE: load_model(base_dir, dtype=torch.float32)}
    for name in ADAPTERS:
        adapted = PeftModel.from_pretrained(
            load_model(base_dir, dtype=torch.float32), artifact_dir(lora_workspace, name)
        )
        models[name] = adapted.merge_and_unload()
    tokens = {}
    with torch.inference_mode():
        for name, model in models.items():
            tokens[name] = []
            for prompt in prompts:
                output = model.eval().generate(
                    torch.tensor([prompt]),
                    max_new_tokens=MAX_TOKENS,
                    do_sample=False,
                    eos_token_id=None,
                )
                tokens[name].append(output[0, len(prompt) :].tolist())
    # The adapters really change the model, each its own way: else the checks prove little.
    assert tokens[BASE] != tokens["lora-a"] != tokens["lora-b"] != tokens[BASE]
    return tokens


def settings(**extra) -> ServeSettings:
    # In-process engine: these tests inspect the model the adapters load into.
    return ServeSettings(
        key_cache_seconds=0.0, torch_threads=1, job_workers=0, engine_process=False, **extra
    )


def complete(url: str, key: str, model: str, prompt: list[int]) -> list[int]:
    """Greedy completion tokens from the server, run to MAX_TOKENS as `generate` runs."""
    response = httpx.post(
        f"{url}/v1/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": model,
            "prompt": prompt,
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
            "ignore_eos": True,
            "return_token_ids": True,
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["token_ids"]


@pytest.fixture(scope="module")
def served(lora_workspace):
    """`forgeml serve lora-base lora-a lora-b`, in a thread."""
    app = create_app(lora_workspace, [BASE, *ADAPTERS], settings(max_on_demand_adapters=0))
    with ServerThread(app) as url:
        yield url, app.state.pool


def test_the_base_weights_are_held_once_whatever_the_adapters(lora_workspace, served):
    _, pool = served
    base, *adapters = pool.models
    assert [s.id for s in pool.models] == [BASE, *ADAPTERS]
    assert all(s.parent is base and isinstance(s.engine, AdapterEngine) for s in adapters)
    assert all(s.engine.base is base.engine for s in adapters)  # no engine of their own
    # One model in memory: the base's weights plus each adapter's A and B, nothing else.
    base_weights = parameter_count(artifact_dir(lora_workspace, BASE), "model.safetensors")
    lora_weights = [
        parameter_count(artifact_dir(lora_workspace, name), "adapter_model.safetensors")
        for name in ADAPTERS
    ]
    assert held_parameters(base.engine.model) == base_weights + sum(lora_weights)
    assert sum(lora_weights) < base_weights / 2  # a second copy of the base would not fit


def test_each_model_decodes_as_generate_with_the_adapter_merged(served, key, prompts, expected):
    url, _ = served
    for name in (BASE, *ADAPTERS):
        assert [complete(url, key, name, p) for p in prompts] == expected[name]


def test_base_and_adapter_requests_share_each_batch_and_get_their_own_answers(
    served, key, prompts, expected, monkeypatch
):
    url, pool = served
    adapters = pool.models[0].engine.adapters
    forwards: list[set[str]] = []  # the adapters of the rows of each forward pass

    def row_names(sequences):
        names = type(adapters).row_names(adapters, sequences)
        forwards.append(set(names))
        return names

    monkeypatch.setattr(adapters, "row_names", row_names)
    jobs = [(name, index) for index in range(len(prompts)) for name in (BASE, *ADAPTERS)]
    with ThreadPoolExecutor(len(jobs)) as threads:
        results = list(threads.map(lambda job: complete(url, key, job[0], prompts[job[1]]), jobs))
    assert results == [expected[name][index] for name, index in jobs]
    assert any(len(names) == 3 and BASE_ROW in names for names in forwards)  # truly mixed


def test_unloading_the_adapters_gives_the_plain_base_back(lora_workspace, prompts):
    base_dir = artifact_dir(lora_workspace, BASE)
    model = load_model(base_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        before = model(torch.tensor([prompts[1]])).logits
    engine = TransformersEngine(model, AutoTokenizer.from_pretrained(base_dir))
    plain = held_parameters(model)
    for name in ADAPTERS:  # no worker thread yet: the loads run here
        engine.add_adapter(name, artifact_dir(lora_workspace, name))
    lora_b = parameter_count(artifact_dir(lora_workspace, "lora-b"), "adapter_model.safetensors")
    engine.remove_adapter("lora-a")  # one left: PEFT deletes lora-a's layers only
    assert engine.adapters.names == ["lora-b"]
    assert held_parameters(engine.adapters.model) == plain + lora_b
    engine.remove_adapter("lora-b")  # none left: the LoRA layers are swapped back out
    assert engine.adapters.model is model and held_parameters(model) == plain
    with torch.inference_mode():
        assert torch.equal(model(torch.tensor([prompts[1]])).logits, before)


def test_an_adapter_that_does_not_fit_leaves_the_model_as_it_was(lora_workspace, prompts, tmp_path):
    base_dir = artifact_dir(lora_workspace, BASE)
    model = load_model(base_dir, dtype=torch.float32).eval()
    engine = TransformersEngine(model, AutoTokenizer.from_pretrained(base_dir))
    prompt = torch.tensor([prompts[1]])

    def logits(adapter_names=None):
        extra = {} if adapter_names is None else {"adapter_names": adapter_names}
        with torch.inference_mode():
            return engine.adapters.model(prompt, **extra).logits

    base = logits()
    broken = tmp_path / "broken"
    shutil.copytree(artifact_dir(lora_workspace, "lora-a"), broken)
    config = json.loads((broken / "adapter_config.json").read_text())
    (broken / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))  # weights: 4
    with pytest.raises(InputError, match="does not fit"):
        engine.add_adapter("broken", broken)  # the first adapter: PEFT wraps the model
    assert engine.adapters.model is model and torch.equal(logits(), base)
    engine.add_adapter("lora-a", artifact_dir(lora_workspace, "lora-a"))
    adapted = logits(["lora-a"])
    with pytest.raises(InputError, match="does not fit"):
        engine.add_adapter("broken", broken)  # a second adapter: PEFT adds its layers
    assert engine.adapters.names == ["lora-a"]
    assert torch.equal(logits(["lora-a"]), adapted) and torch.equal(logits([BASE_ROW]), base)


@pytest.fixture(scope="module")
def on_demand(lora_workspace):
    """A server started with the base only; one adapter at a time loads on demand."""
    app = create_app(
        lora_workspace,
        [BASE],
        settings(
            max_on_demand_models=0,
            max_on_demand_adapters=1,
            on_demand_models=["lora-a", "lora-b", "orphan-lora"],
        ),
    )
    with ServerThread(app) as url:
        yield url, app.state.pool


def test_a_requested_adapter_loads_into_its_served_base_within_its_cap(
    lora_workspace, on_demand, key, prompts, expected
):
    url, pool = on_demand
    assert complete(url, key, "lora-a", prompts[0]) == expected["lora-a"][0]
    listed = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}).json()
    cards = {card["id"]: card for card in listed["data"]}
    assert cards["lora-a"]["parent"] == BASE and cards[BASE]["parent"] is None
    assert cards["lora-a"]["root"] == lora_workspace.registry.resolve("lora-a").ref
    base = pool.models[0]
    assert pool.models[1].engine.base is base.engine  # no second copy of the base

    assert complete(url, key, "lora-b", prompts[1]) == expected["lora-b"][1]
    assert [s.id for s in pool.models] == [BASE, "lora-b"]  # lora-a unloaded: cap is 1
    assert base.engine.adapters.names == [pool.models[1].engine.adapter]
    assert complete(url, key, "lora-a:1", prompts[2]) == expected["lora-a"][2]  # back again
    assert complete(url, key, BASE, prompts[2]) == expected[BASE][2]
    with lora_workspace.registry.session() as session:
        rows = [(row.model_ref, row.status) for row in session.query(Deployment)]
    assert ("lora-a", "stopped") in rows and ("lora-b", "stopped") in rows


def test_an_adapter_whose_base_is_unknown_is_refused_with_a_way_out(lora_workspace, on_demand, key):
    url, _ = on_demand
    staging = lora_workspace.store.new_temp_dir()
    shutil.copytree(artifact_dir(lora_workspace, "lora-a"), staging, dirs_exist_ok=True)
    (staging / "manifest.json").unlink(missing_ok=True)
    (staging / "note.txt").write_text("imported, not trained here\n")  # another artifact
    stored = lora_workspace.store.commit(staging, "adapter", None)
    orphan = record_artifact(lora_workspace, stored, None)  # no run: no lineage to a base
    with lora_workspace.registry.session() as session:
        lora_workspace.registry.add_version(session, "orphan-lora", orphan)
    response = httpx.post(
        f"{url}/v1/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "orphan-lora", "prompt": "def", "max_tokens": 2},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "base model is unknown" in message and "forgeml export" in message
