"""Who may have the server load a registry model it does not hold (`ModelPool.get`).

Loading a model costs memory and may unload another, so it is an admin's decision:

- an admin key may name any registry model;
- any key may name a model listed in `serving.on_demand_models` (a name covers all its
  versions and aliases; a reference such as `support-bot:3` or `model/3fa2b1c0` only
  that artifact);
- any key may name the model of a fine-tuning job that succeeded (an admin created the
  job, so the model answers as soon as it is made, as the README promises), or one of
  its checkpoint models (`<model>-step-N`, jobs/worker.py).

Anything else is answered as an unknown model (404), so a key cannot probe the registry.
"""

from __future__ import annotations

import re

from sqlalchemy import select

from forgeml.core.errors import ForgeError
from forgeml.core.schema import Artifact, FineTuningJob, Version
from forgeml.core.workspace import Workspace
from forgeml.serve.auth import Caller

_CHECKPOINT_MODEL = re.compile(r"(.+)-step-\d+")


def may_load(
    workspace: Workspace, allowed: list[str], artifact: Artifact, caller: Caller | None
) -> bool:
    """Whether `caller` may have `artifact` loaded on demand (blocking: call in a thread).
    No caller is a call from Python inside the server's process, not from the API."""
    if caller is None or caller.allows("admin"):
        return True
    with workspace.registry.session() as session:
        names = set(session.scalars(select(Version.name).where(Version.artifact_id == artifact.id)))
        if names & set(allowed):
            return True
        if names:
            job_models = names | {match.group(1) for name in names
                                  if (match := _CHECKPOINT_MODEL.fullmatch(name))}  # fmt: skip
            made_by_job = select(FineTuningJob.id).where(
                FineTuningJob.status == "succeeded", FineTuningJob.fine_tuned_model.in_(job_models)
            )
            if session.scalars(made_by_job.limit(1)).first() is not None:
                return True
    for reference in allowed:
        try:
            if workspace.registry.resolve(reference).id == artifact.id:
                return True
        except ForgeError:
            continue  # a listed model not (or no longer) in the registry
    return False
