package org.sellerconnector.keycloak.webhook;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Map;
import java.util.Optional;

import org.junit.jupiter.api.Test;

class EventClassifierTest {

    @Test
    void userEventsThatMatter() {
        assertEquals(Optional.of("login"), EventClassifier.userEventKind("LOGIN", Map.of()));
        for (String type : new String[] {"EXECUTE_ACTIONS", "UPDATE_PASSWORD", "VERIFY_EMAIL"}) {
            assertEquals(Optional.of("invitation-accepted"),
                    EventClassifier.userEventKind(type, null), type);
        }
        assertEquals(Optional.of("invitation-accepted"), EventClassifier.userEventKind(
                "UPDATE_CREDENTIAL", Map.of("credential_type", "password")));
        // An OTP added later is not the invitation being accepted.
        assertTrue(EventClassifier.userEventKind(
                "UPDATE_CREDENTIAL", Map.of("credential_type", "otp")).isEmpty());
        assertTrue(EventClassifier.userEventKind("LOGOUT", Map.of()).isEmpty());
        assertTrue(EventClassifier.userEventKind(null, Map.of()).isEmpty());
    }

    @Test
    void userUpdatesAndDeletions() {
        assertEquals(new AdminChange("user-updated", "u1", null, null, null),
                EventClassifier.adminChange("USER", "UPDATE", "users/u1").orElseThrow());
        assertEquals(new AdminChange("deleted", "u1", null, null, null),
                EventClassifier.adminChange("USER", "DELETE", "users/u1").orElseThrow());
        assertTrue(EventClassifier.adminChange("USER", "CREATE", "users/u1").isEmpty());
        assertTrue(EventClassifier.adminChange("USER", "ACTION", "users/u1/logout").isEmpty());
    }

    @Test
    void groupMembership() {
        AdminChange added = EventClassifier.adminChange(
                "GROUP_MEMBERSHIP", "CREATE", "users/u1/groups/g1").orElseThrow();
        assertEquals(new AdminChange("group-added", "u1", "g1", null, null), added);
        assertEquals("group-removed", EventClassifier.adminChange(
                "GROUP_MEMBERSHIP", "DELETE", "users/u1/groups/g1").orElseThrow().kind());
        assertTrue(EventClassifier.adminChange("GROUP_MEMBERSHIP", "CREATE", "groups/g1")
                .isEmpty());
    }

    @Test
    void clientRoleMappingsOfUsersAndGroups() {
        AdminChange user = EventClassifier.adminChange(
                "CLIENT_ROLE_MAPPING", "CREATE", "users/u1/role-mappings/clients/c1").orElseThrow();
        assertEquals(new AdminChange("roles-added", "u1", null, "c1", null), user);
        assertFalse(user.aboutGroup());
        assertEquals("roles-removed", EventClassifier.adminChange(
                "CLIENT_ROLE_MAPPING", "DELETE", "users/u1/role-mappings/clients/c1")
                .orElseThrow().kind());
        // A group's change is the same kind, about the group (no user).
        AdminChange group = EventClassifier.adminChange(
                "CLIENT_ROLE_MAPPING", "DELETE", "groups/g1/role-mappings/clients/c1").orElseThrow();
        assertEquals(new AdminChange("roles-removed", null, "g1", "c1", null), group);
        assertTrue(group.aboutGroup());
        assertEquals(new AdminChange("roles-added", null, "g1", "c1", null),
                EventClassifier.adminChange("CLIENT_ROLE_MAPPING", "CREATE",
                        "groups/g1/role-mappings/clients/c1").orElseThrow());
    }

    @Test
    void otherRoleMappingsAreIgnored() {
        // Realm roles, the composite listing and malformed paths are not permissions.
        assertTrue(EventClassifier.adminChange(
                "REALM_ROLE_MAPPING", "CREATE", "users/u1/role-mappings/realm").isEmpty());
        assertTrue(EventClassifier.adminChange(
                "CLIENT_ROLE_MAPPING", "UPDATE", "users/u1/role-mappings/clients/c1").isEmpty());
        assertTrue(EventClassifier.adminChange(
                "CLIENT_ROLE_MAPPING", "CREATE", "users/u1/role-mappings/clients").isEmpty());
        assertTrue(EventClassifier.adminChange(
                "CLIENT_ROLE_MAPPING", "CREATE", "clients/c1/role-mappings/clients/c2").isEmpty());
        assertTrue(EventClassifier.adminChange(
                "CLIENT_ROLE_MAPPING", "CREATE", "users/u1/composite/clients/c1").isEmpty());
    }

    @Test
    void organizationMembership() {
        assertEquals(new AdminChange("organization-left", "u1", null, null, "o1"),
                EventClassifier.adminChange("ORGANIZATION_MEMBERSHIP", "DELETE",
                        "organizations/o1/members/u1").orElseThrow());
    }

    @Test
    void otherResourcesAreIgnored() {
        assertTrue(EventClassifier.adminChange("CLIENT", "UPDATE", "clients/c1").isEmpty());
        assertTrue(EventClassifier.adminChange(null, "UPDATE", "users/u1").isEmpty());
    }
}
