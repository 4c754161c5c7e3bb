"""Champion/challenger aliases in the MLflow model registry.

A newly registered version becomes ``challenger``.  It is promoted to ``champion`` only
when its validation AUC is not worse than the champion's, judged with its confidence
interval: promote when the challenger's upper CI bound reaches the champion's AUC.
The decision and both numbers are written as tags on the challenger's version.

Two more tag sets let a server reproduce the batch path: the preprocessing the model was
trained on (``preprocess_config``, ``preprocess_fingerprint``) and the triage thresholds
of the evaluation report on the scale of the served probability (:class:`TriageThresholds`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

CHAMPION = "champion"
CHALLENGER = "challenger"
PREPROCESS_CONFIG_TAG = "preprocess_config"  # JSON of ml.preprocess.PreprocessConfig.to_dict()
PREPROCESS_FINGERPRINT_TAG = "preprocess_fingerprint"
TRIAGE_DECISIONS = ("auto_clear", "review", "suspicious")


@dataclass(frozen=True)
class Validation:
    """A model version's validation AUC with its 95% CI."""

    auc: float
    ci_low: float
    ci_high: float

    def as_tags(self) -> dict[str, str]:
        return {"val_auc": f"{self.auc:.6f}", "val_auc_ci_low": f"{self.ci_low:.6f}", "val_auc_ci_high": f"{self.ci_high:.6f}"}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Validation | None:
        try:
            return cls(float(tags["val_auc"]), float(tags["val_auc_ci_low"]), float(tags["val_auc_ci_high"]))
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class TriageThresholds:
    """Dual-threshold triage on the served (calibrated) exam probability ``p``.

    ``p < low`` is auto-cleared, ``p >= high`` is suspicious, anything else goes to review;
    a ``None`` threshold never fires, so :data:`NO_TRIAGE` sends every exam to review.
    """

    low: float | None
    high: float | None
    source: str

    def decide(self, prob: float) -> str:
        """``auto_clear``, ``review`` or ``suspicious`` for one exam probability."""
        if self.high is not None and prob >= self.high:
            return "suspicious"
        if self.low is not None and prob < self.low:
            return "auto_clear"
        return "review"

    def as_tags(self) -> dict[str, str]:
        return {
            "triage_low": "none" if self.low is None else repr(self.low),
            "triage_high": "none" if self.high is None else repr(self.high),
            "triage_source": self.source,
        }

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> TriageThresholds | None:
        """The thresholds recorded on a model version, None when there are none (or they are unreadable)."""
        try:
            low, high = (None if tags[k] == "none" else float(tags[k]) for k in ("triage_low", "triage_high"))
        except (KeyError, ValueError):
            return None
        return cls(low, high, tags.get("triage_source", "model version tags"))

    @classmethod
    def from_operating_points(cls, points: dict, temperature: float, source: str) -> TriageThresholds | None:
        """The ``triage`` operating points of ``ml.evaluation.operating_points`` (found on scores scaled by
        ``temperature``), moved onto the unscaled probability scale: ``sigmoid(temperature * logit(t))``."""
        triage = points.get("triage") if points else None
        if not triage:
            return None

        def unscaled(value: float | None) -> float | None:
            if value is None or value <= 0.0 or value >= 1.0:
                return value
            return 1.0 / (1.0 + math.exp(-temperature * math.log(value / (1.0 - value))))

        return cls(unscaled(triage["low"]["threshold"]), unscaled(triage["high"]["threshold"]), source)


NO_TRIAGE = TriageThresholds(None, None, "default: no registered operating points, every exam goes to review")


@dataclass(frozen=True)
class PromotionDecision:
    """What the gate decided, with the numbers it compared."""

    version: str
    promoted: bool
    reason: str
    challenger: Validation | None
    champion_version: str | None
    champion: Validation | None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def mark_challenger(client, name: str, version: str, validation: Validation | None) -> None:
    """Tag ``version`` with its validation figures (None: not measurable) and point ``challenger`` at it."""
    tags = validation.as_tags() if validation is not None else {"val_auc": "unavailable"}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CHALLENGER, version)


def current_champion(client, name: str) -> tuple[str, Validation | None] | None:
    """The champion's version and validation figures, or None when there is no champion yet."""
    from mlflow.exceptions import MlflowException

    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    return str(champion.version), Validation.from_tags(champion.tags)


def decide(version: str, challenger: Validation | None, champion: tuple[str, Validation | None] | None) -> PromotionDecision:
    """Promote unless the challenger is worse than the champion beyond its own CI."""
    if champion is None:
        return PromotionDecision(version, True, "no champion yet", challenger, None, None)
    champion_version, figures = champion
    if champion_version == version:
        return PromotionDecision(version, True, "already champion", challenger, champion_version, figures)
    if challenger is None:
        return PromotionDecision(version, False, "challenger has no validation AUC", None, champion_version, figures)
    if figures is None:
        return PromotionDecision(version, True, "champion has no validation figures", challenger, champion_version, None)
    verdict = "not worse" if challenger.ci_high >= figures.auc else "worse"
    relation = ">=" if verdict == "not worse" else "<"
    reason = f"{verdict}: challenger CI upper bound {challenger.ci_high:.3f} {relation} champion AUC {figures.auc:.3f}"
    return PromotionDecision(version, verdict == "not worse", reason, challenger, champion_version, figures)


def gate_challenger(client, name: str, version: str) -> PromotionDecision:
    """Run the promotion gate for a tagged challenger ``version``; record and apply the decision."""
    tags = client.get_model_version(name, version).tags
    if "val_auc" not in tags:
        raise ValueError(f"{name} v{version} has no validation tags; call mark_challenger first")
    challenger = Validation.from_tags(tags)
    decision = decide(version, challenger, current_champion(client, name))
    client.set_model_version_tag(name, version, "promotion_decision", "promoted" if decision.promoted else "rejected")
    client.set_model_version_tag(name, version, "promotion_reason", decision.reason)
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    return decision
