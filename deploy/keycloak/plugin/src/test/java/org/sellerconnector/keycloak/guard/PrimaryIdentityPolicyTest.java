package org.sellerconnector.keycloak.guard;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.List;

import org.junit.jupiter.api.Test;

class PrimaryIdentityPolicyTest {

    @Test
    void aChangedRemovedOrNewValueIsAChange() {
        assertTrue(PrimaryIdentityPolicy.changes("owner@a.example", List.of("thief@b.example"),
                true));
        assertTrue(PrimaryIdentityPolicy.changes("owner@a.example", List.of(""), true));
        assertTrue(PrimaryIdentityPolicy.changes("owner@a.example", List.of(), true));
        assertTrue(PrimaryIdentityPolicy.changes("owner@a.example", null, true));
        assertTrue(PrimaryIdentityPolicy.changes(null, List.of("primary"), false));
    }

    @Test
    void theSameValueInAnotherCaseOrWithSpacesIsNoChange() {
        // Keycloak stores usernames and emails lower-cased: the console sends them back so.
        assertFalse(PrimaryIdentityPolicy.changes("owner@a.example", List.of(" Owner@A.example "),
                true));
        assertFalse(PrimaryIdentityPolicy.changes("owner@a.example", "owner@a.example", true));
        assertFalse(PrimaryIdentityPolicy.changes(null, Arrays.asList(null, ""), true));
        // Seller ids are compared as they are.
        assertTrue(PrimaryIdentityPolicy.changes("s-abc", List.of("S-ABC"), false));
    }

    @Test
    void onlyAGuardedChangeNotMadeByTheConnectorIsRefused() {
        assertTrue(PrimaryIdentityPolicy.refuse(true, true, false));
        assertFalse(PrimaryIdentityPolicy.refuse(true, true, true)); // the change-primary flow
        assertFalse(PrimaryIdentityPolicy.refuse(true, false, false)); // another field edited
        assertFalse(PrimaryIdentityPolicy.refuse(false, true, false)); // an unguarded user
    }

    @Test
    void aUsernameAndAnEmailAreEverySellerUsersUnlessTheOptionSays() {
        assertEquals(PrimaryIdentityPolicy.Scope.SELLER,
                PrimaryIdentityPolicy.scope(null, "username"));
        assertEquals(PrimaryIdentityPolicy.Scope.SELLER,
                PrimaryIdentityPolicy.scope("", "username"));
        assertEquals(PrimaryIdentityPolicy.Scope.SELLER,
                PrimaryIdentityPolicy.scope(null, "email"));
        assertEquals(PrimaryIdentityPolicy.Scope.PRIMARY,
                PrimaryIdentityPolicy.scope(null, "firstName"));
        assertEquals(PrimaryIdentityPolicy.Scope.PRIMARY,
                PrimaryIdentityPolicy.scope("primary", "email"));
        assertEquals(PrimaryIdentityPolicy.Scope.PRIMARY,
                PrimaryIdentityPolicy.scope("primary", "username"));
        assertEquals(PrimaryIdentityPolicy.Scope.SELLER,
                PrimaryIdentityPolicy.scope(" Seller ", "email"));
        assertEquals(PrimaryIdentityPolicy.Scope.EVERYONE,
                PrimaryIdentityPolicy.scope("everyone", "seller_role"));
        assertEquals(PrimaryIdentityPolicy.Scope.PRIMARY,
                PrimaryIdentityPolicy.scope("nonsense", "lastName"));
    }

    @Test
    void whoIsGuardedInEachScope() {
        PrimaryIdentityPolicy.Scope seller = PrimaryIdentityPolicy.Scope.SELLER;
        PrimaryIdentityPolicy.Scope primary = PrimaryIdentityPolicy.Scope.PRIMARY;
        PrimaryIdentityPolicy.Scope everyone = PrimaryIdentityPolicy.Scope.EVERYONE;
        // A secondary's username and email are the connector's (scope seller), not in primary.
        assertTrue(PrimaryIdentityPolicy.guarded(seller, true, false));
        assertTrue(PrimaryIdentityPolicy.guarded(seller, true, true));
        assertFalse(PrimaryIdentityPolicy.guarded(primary, true, false));
        assertTrue(PrimaryIdentityPolicy.guarded(primary, true, true));
        // A user without seller attributes (or one being created) is Keycloak's business...
        assertFalse(PrimaryIdentityPolicy.guarded(seller, false, false));
        assertFalse(PrimaryIdentityPolicy.guarded(primary, false, false));
        // ...except for the seller attributes themselves.
        assertTrue(PrimaryIdentityPolicy.guarded(everyone, false, false));
    }

    @Test
    void theFirstNonBlankValueCounts() {
        assertEquals("x@y.example", PrimaryIdentityPolicy.wanted(List.of(" ", "X@y.example"), true));
        assertEquals("", PrimaryIdentityPolicy.wanted(null, true));
    }
}
