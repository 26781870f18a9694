package org.sellerconnector.keycloak.webhook;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;

/**
 * The JSON body of one webhook post.
 *
 * <pre>{@code
 * {"version": 1, "id": "<Keycloak event id>", "source": "admin-event|user-event|guard",
 *  "type": "USER/UPDATE|LOGIN|...", "kind": "disabled|enabled|group-added|...",
 *  "time": <epoch ms>, "realm": "sellers",
 *  "user": {"id", "username", "seller_id", "seller_role", "connector_user_id"},
 *  "group": {"id", "path", "name", "seller_id", "permission_set_id"},
 *  "roles": ["inventory:view"], "client_id": "seller-portal",
 *  "by": {"realm", "user_id", "client_id"}, "message": "..."}
 * }</pre>
 *
 * <p>{@code id} is Keycloak's own event id, the same one that {@code GET /admin-events} and
 * {@code GET /events} return, so the connector skips a polled event that the webhook already
 * delivered. Optional members are left out when empty. Nothing secret goes in.
 */
public final class WebhookPayload {

    /** The payload format version. */
    public static final int VERSION = 1;

    private static final ObjectMapper JSON = new ObjectMapper();

    private final Map<String, Object> fields = new LinkedHashMap<>();

    /**
     * Start a payload with its required members.
     *
     * @param id the event id
     * @param source {@code admin-event}, {@code user-event} or {@code guard}
     * @param type Keycloak's type ({@code RESOURCE/OPERATION} for admin events)
     * @param kind what happened, as seller-connector names it
     * @param time epoch milliseconds
     * @param realm the realm name
     */
    public WebhookPayload(String id, String source, String type, String kind, long time,
                          String realm) {
        fields.put("version", VERSION);
        fields.put("id", id);
        fields.put("source", source);
        fields.put("type", type);
        fields.put("kind", kind);
        fields.put("time", time);
        fields.put("realm", realm);
    }

    /**
     * Add a member unless the value is null or an empty list or map.
     *
     * @param name the member name
     * @param value its value
     * @return this payload
     */
    public WebhookPayload with(String name, Object value) {
        boolean empty = value == null
                || (value instanceof List<?> list && list.isEmpty())
                || (value instanceof Map<?, ?> map && map.isEmpty());
        if (!empty) {
            fields.put(name, value);
        }
        return this;
    }

    /** @return the event id */
    public String id() {
        return (String) fields.get("id");
    }

    /** @return the kind */
    public String kind() {
        return (String) fields.get("kind");
    }

    /** @return the members, in order (read-only use) */
    public Map<String, Object> fields() {
        return fields;
    }

    /** @return the compact JSON text that is signed and sent */
    public String toJson() {
        try {
            return JSON.writeValueAsString(fields);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("cannot serialise a webhook payload", e);
        }
    }

    /**
     * Role names from an admin event's representation of a role mapping (a JSON list of
     * role representations).
     *
     * @param representation the representation text (may be null)
     * @return the role names, empty when there are none or the text is not such a list
     */
    public static List<String> roleNames(String representation) {
        if (representation == null || representation.isBlank()) {
            return List.of();
        }
        try {
            Object parsed = JSON.readValue(representation, Object.class);
            if (!(parsed instanceof List<?> list)) {
                return List.of();
            }
            return list.stream()
                    .filter(Map.class::isInstance)
                    .map(item -> ((Map<?, ?>) item).get("name"))
                    .filter(String.class::isInstance)
                    .map(String.class::cast)
                    .sorted()
                    .toList();
        } catch (JsonProcessingException e) {
            return List.of();
        }
    }

    /**
     * Whether an admin event's user representation sets {@code enabled} (a full update from
     * the console does; an update of attributes alone through the API may not).
     *
     * @param representation the representation text (may be null)
     * @return whether it has an {@code enabled} member
     */
    public static boolean setsEnabled(String representation) {
        if (representation == null || representation.isBlank()) {
            return false;
        }
        try {
            Object parsed = JSON.readValue(representation, Object.class);
            return parsed instanceof Map<?, ?> map && map.containsKey("enabled");
        } catch (JsonProcessingException e) {
            return false;
        }
    }
}
