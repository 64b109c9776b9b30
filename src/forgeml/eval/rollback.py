"""Rollback: move an alias back to the version it pointed at before its last move.

    forgeml models rollback my-model                 # my-model@prod back one step
    forgeml models rollback my-model --alias candidate --reason "latency regression"

The alias's history (`alias_history`, written by every `Registry.set_alias`) is replayed
as a stack: a promotion pushes its version, a rollback pops back to the version it
moved to. So promote 1, 2, 3 then rollback twice gives 2, then 1; a third rollback is
refused (nothing earlier). No gate is checked, since the target was promoted before;
a target forgotten by a deletion request since then is refused. The alias moves through
`Registry.set_alias` (audited `alias.set`, like a promotion), and `model.rollback`
records both versions, the reason and who did it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from forgeml.core.errors import InputError

if TYPE_CHECKING:
    from forgeml.core.workspace import Workspace


@dataclass
class Rollback:
    name: str
    alias: str
    from_version: int
    to_version: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": f"{self.name}:{self.to_version}",
            "alias": self.alias,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "reason": self.reason,
        }


def targets(history: list[dict[str, Any]]) -> list[int]:
    """The stack of versions the alias can go back through, the current one last."""
    stack: list[int] = []
    for move in history:
        version = move["version"]
        if move["action"] == "rollback":
            while stack and stack[-1] != version:
                stack.pop()
            if not stack:
                stack.append(version)
        elif not stack or stack[-1] != version:
            stack.append(version)
    return stack


def rollback(workspace: Workspace, name: str, alias: str = "prod", reason: str = "") -> Rollback:
    """Point NAME@ALIAS back at its previous target; see the module docstring."""
    registry = workspace.registry
    current, _ = registry.alias_target(name, alias, purpose="be rolled back from")
    stack = targets(registry.alias_history(name, alias))
    if not stack or stack[-1] != current:  # moved outside the history (an older forgeml)
        stack.append(current)
    if len(stack) < 2:
        raise InputError(
            f"{name}@{alias} has no earlier version to go back to (it points at "
            f"{name}:{current}, and its history has nothing before that)",
            hint=f"Promote a version explicitly: forgeml models promote {name}:N --alias {alias}",
        )
    target = stack[-2]
    registry.resolve(f"{name}:{target}", purpose=f"become {name}@{alias} again")
    registry.set_alias(name, alias, target, reason, action="rollback")
    result = Rollback(name, alias, current, target, reason)
    with registry.session() as session:
        registry.audit(session, "model.rollback", f"{name}@{alias}", **result.to_dict())
    return result
