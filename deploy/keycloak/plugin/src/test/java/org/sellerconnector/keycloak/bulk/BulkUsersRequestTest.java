package org.sellerconnector.keycloak.bulk;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.sellerconnector.keycloak.SellerNames;

class BulkUsersRequestTest {

    private static BulkUsersRequest.User user(String id, String seller) {
        BulkUsersRequest.User user = new BulkUsersRequest.User();
        user.connectorId = id;
        user.username = id + "@acme.example";
        user.enabled = true;
        user.attributes = new HashMap<>(Map.of("seller_id", List.of(seller),
                "seller_role", List.of("secondary"), "seller_connector_user_id", List.of(id)));
        return user;
    }

    private static BulkUsersRequest request(BulkUsersRequest.User... users) {
        BulkUsersRequest request = new BulkUsersRequest();
        request.organizationId = "org-1";
        request.users = new ArrayList<>(List.of(users));
        return request;
    }

    private static List<String> problems(BulkUsersRequest request) {
        return request.problems(SellerNames.DEFAULT, 3);
    }

    @Test
    void oneSellersUsersAsTheConnectorSendsThemPass() {
        assertEquals(List.of(), problems(request(user("u-1", "s-1"), user("u-2", "s-1"))));
    }

    @Test
    void aChunkIsOneSellersAndNoBiggerThanAllowed() {
        assertTrue(problems(request(user("u-1", "s-1"), user("u-2", "s-2"))).toString()
                .contains("one seller"));
        assertTrue(problems(request(user("a", "s"), user("b", "s"), user("c", "s"),
                user("d", "s"))).toString().contains("at most 3"));
        assertTrue(problems(request()).toString().contains("may not be empty"));
        BulkUsersRequest noOrganization = request(user("u-1", "s-1"));
        noOrganization.organizationId = " ";
        assertTrue(problems(noOrganization).toString().contains("organizationId"));
    }

    @Test
    void eachUserCarriesItsOwnIdsAndOnlyTheSellerAttributes() {
        BulkUsersRequest.User mismatched = user("u-1", "s-1");
        mismatched.attributes.put("seller_connector_user_id", List.of("u-2"));
        assertTrue(problems(request(mismatched)).toString().contains("must be [connectorId]"));

        BulkUsersRequest.User extra = user("u-1", "s-1");
        extra.attributes.put("is_admin", List.of("true"));
        assertTrue(problems(request(extra)).toString().contains("only the seller attributes"));

        BulkUsersRequest.User twice = user("u-1", "s-1");
        assertTrue(problems(request(twice, user("u-1", "s-1"))).toString().contains("twice"));

        BulkUsersRequest.User blank = user("u-1", "s-1");
        blank.username = "";
        blank.enabled = null;
        String found = problems(request(blank)).toString();
        assertTrue(found.contains("username is required") && found.contains("enabled is required"));
    }
}
