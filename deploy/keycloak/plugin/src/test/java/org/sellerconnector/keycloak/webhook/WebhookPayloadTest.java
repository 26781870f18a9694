package org.sellerconnector.keycloak.webhook;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.sellerconnector.keycloak.SellerUser;

class WebhookPayloadTest {

    @Test
    void shapeOfAnAdminEventPayload() {
        SellerUser user = new SellerUser("kc-1", "ann@s.example", "s-1", "secondary", "u-1");
        WebhookPayload payload = new WebhookPayload("ev-1", "admin-event", "USER/UPDATE",
                "disabled", 1_700_000_000_123L, "sellers")
                .with("user", user.toJson())
                .with("roles", List.of())
                .with("group", null)
                .with("by", Map.of("user_id", "admin-1"));
        assertEquals("{\"version\":1,\"id\":\"ev-1\",\"source\":\"admin-event\","
                + "\"type\":\"USER/UPDATE\",\"kind\":\"disabled\",\"time\":1700000000123,"
                + "\"realm\":\"sellers\",\"user\":{\"id\":\"kc-1\",\"username\":\"ann@s.example\","
                + "\"seller_id\":\"s-1\",\"seller_role\":\"secondary\","
                + "\"connector_user_id\":\"u-1\"},\"by\":{\"user_id\":\"admin-1\"}}",
                payload.toJson());
        assertEquals("ev-1", payload.id());
        assertEquals("disabled", payload.kind());
    }

    @Test
    void roleNamesFromARoleMappingRepresentation() {
        String representation = "[{\"id\":\"r2\",\"name\":\"orders:view\",\"composite\":false},"
                + "{\"id\":\"r1\",\"name\":\"inventory:edit\"},{\"id\":\"r3\"}]";
        assertEquals(List.of("inventory:edit", "orders:view"),
                WebhookPayload.roleNames(representation));
        assertEquals(List.of(), WebhookPayload.roleNames("{\"name\":\"x\"}"));
        assertEquals(List.of(), WebhookPayload.roleNames("not json"));
        assertEquals(List.of(), WebhookPayload.roleNames(null));
    }

    @Test
    void whetherAUserUpdateSetsEnabled() {
        assertTrue(WebhookPayload.setsEnabled("{\"username\":\"a\",\"enabled\":false}"));
        assertFalse(WebhookPayload.setsEnabled("{\"attributes\":{}}"));
        assertFalse(WebhookPayload.setsEnabled("[]"));
        assertFalse(WebhookPayload.setsEnabled(null));
    }
}
