package org.sellerconnector.keycloak.mapper;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;

class SellerClaimTest {

    @Test
    void highestLevelPerCategoryFromEffectiveRoleNames() {
        // What a user with inventory:admin (a composite down to view), orders:view through a
        // group and pricing:none gets as effective role names.
        List<String> roles = List.of("inventory:view", "inventory:admin", "inventory:edit",
                "orders:view", "pricing:none", "offline_access", "weird:superuser", ":view");
        assertEquals(Map.of("inventory", "admin", "orders", "view"),
                SellerClaim.highestLevels(roles));
    }

    @Test
    void claimShape() {
        Map<String, Object> expected = new LinkedHashMap<>();
        expected.put("id", "s-1");
        expected.put("role", "secondary");
        expected.put("permissions", Map.of("reports", "edit"));
        assertEquals(expected,
                SellerClaim.compute("s-1", "secondary", List.of("reports:view", "reports:edit")));
        assertEquals(List.of("id", "role", "permissions"),
                List.copyOf(SellerClaim.compute("s-1", "primary", List.of()).keySet()));
    }

    @Test
    void categoriesMayContainColons() {
        assertEquals(Map.of("a:b", "edit"), SellerClaim.highestLevels(List.of("a:b:edit")));
    }
}
