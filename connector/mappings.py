"""Load the YAML files of ``mappings/`` and check them, with errors that name the file and line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from connector.domain.catalogue import (
    Catalogue,
    DefaultPermissionSet,
    Level,
    NotificationCategory,
    PermissionCategory,
)

MAPPINGS_DIR = Path(__file__).resolve().parent.parent / "mappings"
_KEBAB = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"

M = TypeVar("M", bound=BaseModel)


class MappingError(Exception):
    """A file in mappings/ is missing, is not YAML, or does not say what it must."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _CategoryFile(_Strict):
    id: str = Field(pattern=_KEBAB)
    name: str
    description: str = ""
    levels: list[Level] | None = None


class _PermissionsFile(_Strict):
    levels: list[Level] = [Level.none, Level.view, Level.edit, Level.admin]
    administrator_category: str = "user-permissions"
    categories: list[_CategoryFile] = Field(min_length=1)

    @field_validator("categories")
    @classmethod
    def _unique(cls, value: list[_CategoryFile]) -> list[_CategoryFile]:
        ids = [c.id for c in value]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate category ids: {', '.join(duplicates)}")
        return value


class _NotificationFile(_Strict):
    categories: list[_CategoryFile] = Field(min_length=1)


class _PermissionSetFile(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    permissions: dict[str, Level]


class _PermissionSetsFile(_Strict):
    permission_sets: list[_PermissionSetFile] = []


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Walk a composed YAML node along a pydantic error location to find its line."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == key), None)
            if match is None:
                match = next((k for k, _ in node.value if k.value == key), None)
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
            node = node.value[key] if key < len(node.value) else None
        else:
            break
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def load_yaml(path: Path, model: type[M]) -> M:
    """Read one YAML file into a model.

    :raises MappingError: naming the file, the line and what is wrong.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(f"{path}: cannot read the file ({exc.strerror})") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise MappingError(
            f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}"
        ) from exc
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            line = _line_of(node, tuple(error["loc"]))
            where = f"{path}:{line}" if line else str(path)
            field = ".".join(str(p) for p in error["loc"]) or "(top level)"
            problems.append(f"{where}: {field}: {error['msg']}")
        raise MappingError("\n".join(problems)) from exc


def load_catalogue(directory: Path = MAPPINGS_DIR) -> Catalogue:
    """Load the permission catalogue, notification categories and default permission sets.

    :raises MappingError: naming the file and line of the first problems.
    """
    perms = load_yaml(directory / "permissions.yaml", _PermissionsFile)
    notes = load_yaml(directory / "notifications.yaml", _NotificationFile)
    sets_path = directory / "permission-sets.yaml"
    sets = (
        load_yaml(sets_path, _PermissionSetsFile) if sets_path.exists() else _PermissionSetsFile()
    )
    categories = tuple(
        PermissionCategory(
            id=c.id,
            display_name=c.name,
            description=c.description,
            levels=tuple(c.levels or perms.levels),
        )
        for c in perms.categories
    )
    ids = {c.id for c in categories}
    if perms.administrator_category not in ids:
        raise MappingError(
            f"{directory / 'permissions.yaml'}: administrator_category "
            f"{perms.administrator_category!r} is not one of the categories"
        )
    for number, pset in enumerate(sets.permission_sets):
        unknown = sorted(set(pset.permissions) - ids)
        if unknown:
            line = _line_of(
                yaml.compose(sets_path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader),
                ("permission_sets", number, "permissions"),
            )
            raise MappingError(
                f"{sets_path}:{line}: permission set {pset.name!r} names unknown "
                f"categories: {', '.join(unknown)}"
            )
    return Catalogue(
        permissions=categories,
        notifications=tuple(
            NotificationCategory(id=c.id, display_name=c.name, description=c.description)
            for c in notes.categories
        ),
        administrator_category=perms.administrator_category,
        default_permission_sets=tuple(
            DefaultPermissionSet(
                name=p.name,
                description=p.description,
                permissions=tuple(p.permissions.items()),
            )
            for p in sets.permission_sets
        ),
    )


class KeycloakNames(_Strict):
    """The names this service gives things in Keycloak (mappings/idp.yaml)."""

    realm: str
    portal_client_id: str
    role_name: str
    group_root: str
    group_path: str
    organization_alias: str
    attributes: dict[str, str]
    invitation_actions: list[str] = ["UPDATE_PASSWORD", "VERIFY_EMAIL"]

    def role(self, category: str, level: str) -> str:
        """The name of the portal client role of a category at a level."""
        return self.role_name.format(category=category, level=level)

    def parse_role(self, name: str) -> tuple[str, str] | None:
        """(category, level) of a portal role name made by :meth:`role`, else None."""
        pattern = re.escape(self.role_name)
        pattern = pattern.replace(re.escape("{category}"), "(?P<category>.+?)")
        pattern = pattern.replace(re.escape("{level}"), "(?P<level>.+)")
        found = re.fullmatch(pattern, name)
        return (found["category"], found["level"]) if found else None


class _IdpFile(_Strict):
    keycloak: KeycloakNames


def load_keycloak_names(directory: Path = MAPPINGS_DIR) -> KeycloakNames:
    """Load mappings/idp.yaml.

    :raises MappingError: naming the file and line of the first problems.
    """
    return load_yaml(directory / "idp.yaml", _IdpFile).keycloak
