package org.sellerconnector.keycloak.bulk;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import java.util.Set;

import org.junit.jupiter.api.Test;

class UserPlanTest {

    private static BulkUsersRequest.User wanted() {
        BulkUsersRequest.User user = new BulkUsersRequest.User();
        user.connectorId = "u-1";
        user.username = "Sam@Acme.example";
        user.email = "Sam@Acme.example";
        user.firstName = "Sam";
        user.lastName = "Stock";
        user.enabled = true;
        user.attributes = Map.of("seller_id", List.of("s-1"), "seller_role", List.of("secondary"),
                "seller_connector_user_id", List.of("u-1"));
        user.roles = List.of("orders:view", "pricing:edit");
        user.groups = List.of("g-1");
        return user;
    }

    private static UserPlan.Current stored(boolean enabled, Set<String> roles, Set<String> groups,
                                           boolean member) {
        return new UserPlan.Current("sam@acme.example", "sam@acme.example", "Sam", "Stock",
                enabled, Map.of("seller_id", List.of("s-1"), "seller_role", List.of("secondary"),
                        "seller_connector_user_id", List.of("u-1")), roles, groups, member);
    }

    @Test
    void aNewUserGetsEverything() {
        UserPlan plan = UserPlan.of(UserPlan.NONE, wanted());
        assertTrue(plan.profile());
        assertEquals(Set.of("orders:view", "pricing:edit"), plan.rolesToAdd());
        assertEquals(Set.of("g-1"), plan.groupsToJoin());
        assertTrue(plan.joinOrganization());
        assertFalse(plan.endSessions());
    }

    @Test
    void anUnchangedUserWritesNothingWhateverTheCaseOfItsNames() {
        UserPlan plan = UserPlan.of(stored(true, Set.of("orders:view", "pricing:edit"),
                Set.of("g-1"), true), wanted());
        assertFalse(plan.changes(), plan.toString());
    }

    @Test
    void onlyTheDifferenceIsWritten() {
        BulkUsersRequest.User user = wanted();
        user.enabled = false;
        user.lastName = "Shelf";
        user.roles = List.of("orders:view");
        user.groups = List.of("g-2");
        UserPlan plan = UserPlan.of(stored(true, Set.of("orders:view", "reports:view"),
                Set.of("g-1"), true), user);
        assertTrue(plan.profile());
        assertTrue(plan.enabled());
        assertTrue(plan.endSessions());
        assertEquals(Set.of(), plan.rolesToAdd());
        assertEquals(Set.of("reports:view"), plan.rolesToRemove());
        assertEquals(Set.of("g-2"), plan.groupsToJoin());
        assertEquals(Set.of("g-1"), plan.groupsToLeave());
        assertFalse(plan.joinOrganization());
    }

    @Test
    void leftOutNamesAndEmailAreLeftAlone() {
        BulkUsersRequest.User user = wanted();
        user.email = null;
        user.firstName = null;
        user.lastName = null;
        UserPlan.Current current = new UserPlan.Current("sam@acme.example", "other@acme.example",
                "X", "Y", true, stored(true, Set.of(), Set.of(), true).attributes(),
                Set.of("orders:view", "pricing:edit"), Set.of("g-1"), true);
        assertFalse(UserPlan.of(current, user).changes());
    }

    @Test
    void aChangedOrMissingSellerAttributeIsAProfileChange() {
        UserPlan.Current current = new UserPlan.Current("sam@acme.example", "sam@acme.example",
                "Sam", "Stock", true, Map.of("seller_id", List.of("s-1"),
                        "seller_role", List.of("primary")),
                Set.of("orders:view", "pricing:edit"), Set.of("g-1"), true);
        assertTrue(UserPlan.of(current, wanted()).profile());
    }
}
