"""scim2-models' repeated answers, kept once per process (scim/library_caches.py)."""

from __future__ import annotations

import inspect

import pytest
from scim2_models import EnterpriseUser, Group, InvalidFilterException, PatchOp, ScimFilter, User
from scim2_models.path import access, path, resolution
from scim2_server.utils import parametrize

from scim.library_caches import (
    UNCACHED_DESIGNATED_MODEL,
    designated_model,
    filter_value_adapter,
    install,
)

WORK_EMAIL = 'emails[type eq "work"].value eq "{}"'
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"


# -- Filter values' adapters -----------------------------------------------------------


def test_scim2_models_still_builds_an_adapter_per_value() -> None:
    # The work-around replaces this call; when scim2-models changes it, revisit the module.
    assert "TypeAdapter(annotated_type)" in inspect.getsource(resolution.coerce_value)


def test_a_second_lookup_reuses_the_adapter_and_still_validates() -> None:
    install()
    bound = parametrize(ScimFilter, User)
    bound(WORK_EMAIL.format("first@work.example"))
    before = filter_value_adapter.cache_info()  # type: ignore[attr-defined]
    bound(WORK_EMAIL.format("second@work.example"))
    after = filter_value_adapter.cache_info()  # type: ignore[attr-defined]
    assert after.misses == before.misses
    assert after.hits > before.hits
    # The value is still validated against the attribute's type.
    with pytest.raises(InvalidFilterException, match="not valid"):
        bound(WORK_EMAIL.format("not an address"))


# -- Which model a path designates ------------------------------------------------------


def test_scim2_models_still_asks_through_the_replaced_name() -> None:
    # The work-around rebinds these names; when scim2-models moves the calls, revisit it.
    assert "_designated_model(model, str(self))" in inspect.getsource(path)
    assert "_designated_model(model, str(path))" in inspect.getsource(access)
    assert resolution._designated_model in (UNCACHED_DESIGNATED_MODEL, designated_model)


@pytest.mark.parametrize(
    ("model", "text"),
    [
        (User[EnterpriseUser], ENTERPRISE),
        (User[EnterpriseUser], ENTERPRISE.upper()),
        (User[EnterpriseUser], CORE_USER),
        (User[EnterpriseUser], "userName"),
        (User[EnterpriseUser], f"{ENTERPRISE}:employeeNumber"),
        (User, ENTERPRISE),
        (Group, CORE_USER),
        (EnterpriseUser, ENTERPRISE),
    ],
)
def test_the_answer_is_scim2_models_own(model: type, text: str) -> None:
    assert designated_model(model, text) is UNCACHED_DESIGNATED_MODEL(model, text)


def test_a_patch_asks_the_cache_and_still_patches() -> None:
    install()
    model = User[EnterpriseUser]
    user = model(user_name="bjensen", active=True)
    patch = PatchOp[model].model_validate(
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {"op": "replace", "path": "active", "value": False},
                {"op": "replace", "value": {f"{ENTERPRISE}:employeeNumber": "701984"}},
            ],
        }
    )
    before = designated_model.cache_info()  # type: ignore[attr-defined]
    patch.patch(user)
    patch.patch(user)
    after = designated_model.cache_info()  # type: ignore[attr-defined]
    assert after.hits > before.hits
    assert user.active is False
    assert user[EnterpriseUser].employee_number == "701984"
