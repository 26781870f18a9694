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
        assertFalse(PrimaryIdentityPolicy.refuse(false, true, false)); // a secondary's email
    }

    @Test
    void theFirstNonBlankValueCounts() {
        assertEquals("x@y.example", PrimaryIdentityPolicy.wanted(List.of(" ", "X@y.example"), true));
        assertEquals("", PrimaryIdentityPolicy.wanted(null, true));
    }
}
