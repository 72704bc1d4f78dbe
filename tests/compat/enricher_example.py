from workmanager.provenance import DefaultEnricher


class TeamEnricher(DefaultEnricher):
    """Adds the caller's team and a label to every provenance row."""

    def enrich(self, action, agent):
        data = super().enrich(action, agent)
        data["team"] = agent.headers.get("x-team", "unknown")
        data["label"] = f"{agent.id}:{action}"
        return data
