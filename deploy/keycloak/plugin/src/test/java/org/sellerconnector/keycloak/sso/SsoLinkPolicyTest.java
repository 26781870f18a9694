package org.sellerconnector.keycloak.sso;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

import java.util.List;

import org.junit.jupiter.api.Test;
import org.sellerconnector.keycloak.sso.SsoLinkPolicy.Refusal;

class SsoLinkPolicyTest {

    private static final List<String> DOMAINS = List.of("corp.example");

    @Test
    void linksAnEnabledUserOfTheSameSellerInALinkedDomain() {
        assertNull(SsoLinkPolicy.check("Ann@CORP.example", DOMAINS, "s-1", "s-1", true, true));
    }

    @Test
    void refusals() {
        assertEquals(Refusal.NO_EMAIL, SsoLinkPolicy.check(null, DOMAINS, "s-1", "s-1", true, true));
        assertEquals(Refusal.NO_EMAIL, SsoLinkPolicy.check("nobody", DOMAINS, "s-1", "s-1", true, true));
        assertEquals(Refusal.DOMAIN_NOT_LINKED,
                SsoLinkPolicy.check("ann@other.example", DOMAINS, "s-1", "s-1", true, true));
        assertEquals(Refusal.DOMAIN_NOT_LINKED,
                SsoLinkPolicy.check("ann@corp.example", List.of(), "s-1", "s-1", true, true));
        assertEquals(Refusal.NOT_PROVISIONED,
                SsoLinkPolicy.check("ann@corp.example", DOMAINS, "s-1", null, false, false));
        // Another seller's user (a corporate IdP asserting someone else's address).
        assertEquals(Refusal.OTHER_SELLER,
                SsoLinkPolicy.check("ann@corp.example", DOMAINS, "s-1", "s-2", true, true));
        assertEquals(Refusal.OTHER_SELLER,
                SsoLinkPolicy.check("ann@corp.example", DOMAINS, "s-1", null, true, true));
        assertEquals(Refusal.DISABLED,
                SsoLinkPolicy.check("ann@corp.example", DOMAINS, "s-1", "s-1", false, true));
    }
}
