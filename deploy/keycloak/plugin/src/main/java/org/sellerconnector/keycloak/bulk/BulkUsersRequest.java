package org.sellerconnector.keycloak.bulk;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;

import org.sellerconnector.keycloak.SellerNames;

/**
 * The body of {@code POST /realms/{realm}/seller-connector/users}: one chunk of one seller's
 * users, each as the connector's store has it now.
 *
 * <pre>{@code
 * {"organizationId": "<the seller's organization id>",
 *  "users": [{"connectorId": "<connector user id>", "id": "<Keycloak id, when known>",
 *             "username": "sam@acme.example", "email": "sam@acme.example",
 *             "firstName": "Sam", "lastName": "Stock", "enabled": true,
 *             "attributes": {"seller_id": ["s-1"], "seller_role": ["secondary"],
 *                            "seller_connector_user_id": ["u-1"]},
 *             "roles": ["orders:view"], "groups": ["<group id>"]}]}
 * }</pre>
 *
 * <p>{@code roles} are the exact direct client roles of the portal client, {@code groups} the
 * exact groups under the root group (by id); {@code email}, {@code firstName} and
 * {@code lastName} left out (null) are left as Keycloak has them.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public final class BulkUsersRequest {

    /** The seller's organization: every user of the chunk becomes (or stays) its member. */
    public String organizationId;
    /** The users, at most the endpoint's {@code max-users}. */
    public List<User> users;

    /** One user as the connector's store has it. */
    @JsonIgnoreProperties(ignoreUnknown = true)
    public static final class User {
        /** seller-connector's own user id (also in the connector id attribute). */
        public String connectorId;
        /** Keycloak's id when the connector knows it; otherwise found by the connector id. */
        public String id;
        public String username;
        public String email;
        public String firstName;
        public String lastName;
        public Boolean enabled;
        /** The seller attributes (seller id, role, connector id): set exactly. */
        public Map<String, List<String>> attributes;
        /** Direct portal client role names: exactly these. */
        public List<String> roles;
        /** Ids of the groups under the root group the user is in: exactly these. */
        public List<String> groups;
    }

    /**
     * What is wrong with the request as a whole (empty when nothing): a chunk that is not one
     * seller's users as the connector sends them is refused before anything is read or written.
     *
     * @param names the seller attribute names
     * @param maxUsers the most users one request may carry
     * @return the problems, in words
     */
    public List<String> problems(SellerNames names, int maxUsers) {
        List<String> problems = new ArrayList<>();
        if (organizationId == null || organizationId.isBlank()) {
            problems.add("organizationId is required");
        }
        if (users == null || users.isEmpty()) {
            problems.add("users is required and may not be empty");
            return problems;
        }
        if (users.size() > maxUsers) {
            problems.add("at most " + maxUsers + " users per request, not " + users.size());
        }
        Set<String> seen = new HashSet<>();
        String sellerId = null;
        for (int index = 0; index < users.size(); index++) {
            User user = users.get(index);
            String where = "users[" + index + "]";
            if (user == null) {
                problems.add(where + " is null");
                continue;
            }
            if (user.connectorId == null || user.connectorId.isBlank()) {
                problems.add(where + ".connectorId is required");
                continue;
            }
            if (!seen.add(user.connectorId)) {
                problems.add(where + ": connector id " + user.connectorId + " appears twice");
            }
            if (user.username == null || user.username.isBlank()) {
                problems.add(where + ".username is required");
            }
            if (user.enabled == null) {
                problems.add(where + ".enabled is required");
            }
            Map<String, List<String>> attributes = user.attributes;
            List<String> connector = attributes == null ? null
                    : attributes.get(names.connectorIdAttribute());
            if (connector == null || !connector.equals(List.of(user.connectorId))) {
                problems.add(where + ".attributes." + names.connectorIdAttribute()
                        + " must be [connectorId]");
            }
            List<String> seller = attributes == null ? null
                    : attributes.get(names.sellerIdAttribute());
            if (seller == null || seller.size() != 1 || seller.get(0).isBlank()) {
                problems.add(where + ".attributes." + names.sellerIdAttribute()
                        + " must hold the seller id");
            } else if (sellerId == null) {
                sellerId = seller.get(0);
            } else if (!sellerId.equals(seller.get(0))) {
                problems.add(where + ": every user of a request belongs to one seller");
            }
            if (attributes != null) {
                for (String name : attributes.keySet()) {
                    if (!names.isSellerAttribute(name)) {
                        problems.add(where + ".attributes." + name
                                + ": only the seller attributes are set here");
                    }
                }
            }
        }
        return problems;
    }
}
