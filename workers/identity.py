"""A consumer agent's identity (``--agent-id``, ``WORK_MANAGER_AGENT_*``), refused at
start-up when provenance cannot record it, naming where each field was set."""

from __future__ import annotations

from workmanager.errors import ConfigurationError, InvalidAgentMetadata
from workmanager.types import NAME_MAX, AgentInfo

#: Where each field of the agent's identity is set, for the start-up refusal.
IDENTITY_SOURCES = {
    "agent_id": "--agent-id",
    "name": "WORK_MANAGER_AGENT_NAME",
    "agent_version": "WORK_MANAGER_AGENT_VERSION",
    "model_name": "WORK_MANAGER_AGENT_MODEL",
    "runtime": "WORK_MANAGER_AGENT_RUNTIME",
}


def checked_identity(agent: AgentInfo) -> None:
    """Refuse at start-up an identity provenance cannot store (every surface's rule:
    ``services.inputs.check_agent_metadata``), naming where it was set: every item would
    otherwise fail on its first write, its message lost."""
    from workmanager.services.inputs import check_agent_metadata

    try:
        check_agent_metadata(agent.id, agent)
    except InvalidAgentMetadata as exc:
        problems = exc.details if isinstance(exc.details, list) else []
        said = "; ".join(_where(p) for p in problems)
        raise ConfigurationError(f"the agent's identity cannot be recorded: {said}") from exc


def _where(problem: dict[str, str]) -> str:
    """A problem of the identity, said of the value the person set."""
    field = problem["field"]
    message = problem["message"]
    if field == "runtime":  # stored as "celery/<runtime>": the variable has that much less
        message = message.replace(str(NAME_MAX), str(NAME_MAX - len(RUNTIME_PREFIX)))
    return f"{IDENTITY_SOURCES.get(field, field)}: {message}"


#: What a consumer agent's runtime is recorded under (``celery/<WORK_MANAGER_AGENT_RUNTIME>``).
RUNTIME_PREFIX = "celery/"
