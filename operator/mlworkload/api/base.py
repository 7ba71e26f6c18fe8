"""The base of every API model: camelCase on the wire, unknown fields refused."""

from typing import Any

from pydantic import BaseModel, ConfigDict, JsonValue
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """A part of the user-facing API. Unknown fields are errors, never silently dropped."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        use_enum_values=False,
    )

    def to_dict(self) -> dict[str, Any]:
        """The wire form: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def with_cel(*rules: dict[str, str]) -> ConfigDict:
    """The API model config plus CEL rules, which `mlworkload.api.crd` copies into the CRD."""
    validations: list[JsonValue] = [dict(rule) for rule in rules]
    return ConfigDict(**ApiModel.model_config, json_schema_extra={"x-kubernetes-validations": validations})


def cel_rules(model: type[BaseModel]) -> list[dict[str, str]]:
    """The CEL rules declared on a model with `with_cel`."""
    extra = model.model_config.get("json_schema_extra")
    rules = extra.get("x-kubernetes-validations") if isinstance(extra, dict) else None
    return [dict(rule) for rule in rules] if isinstance(rules, list) else []  # type: ignore[arg-type]


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One CEL rule for the CRD's `x-kubernetes-validations` (enforced by the API server)."""
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry
