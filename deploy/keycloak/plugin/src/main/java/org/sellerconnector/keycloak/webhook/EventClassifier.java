package org.sellerconnector.keycloak.webhook;

import java.util.Map;
import java.util.Optional;

/**
 * Which Keycloak events the webhook reports, and as what kind: pure functions of the event's
 * type, operation and resource path, so that they are unit-tested without a server.
 */
public final class EventClassifier {

    private EventClassifier() {
    }

    /**
     * The kind of a user event.
     *
     * @param type the event type name ({@code LOGIN}, {@code UPDATE_PASSWORD}, ...)
     * @param details the event's details (may be null)
     * @return {@code login}, {@code invitation-accepted} (the invitation's actions were done:
     *     {@code EXECUTE_ACTIONS}, {@code UPDATE_PASSWORD}, {@code VERIFY_EMAIL}, or
     *     {@code UPDATE_CREDENTIAL} of a password), or empty for anything else
     */
    public static Optional<String> userEventKind(String type, Map<String, String> details) {
        if (type == null) {
            return Optional.empty();
        }
        switch (type) {
            case "LOGIN":
                return Optional.of("login");
            case "EXECUTE_ACTIONS":
            case "UPDATE_PASSWORD":
            case "VERIFY_EMAIL":
                return Optional.of("invitation-accepted");
            case "UPDATE_CREDENTIAL":
                String credential = details == null ? null : details.get("credential_type");
                return credential == null || "password".equals(credential)
                        ? Optional.of("invitation-accepted") : Optional.empty();
            default:
                return Optional.empty();
        }
    }

    /**
     * The meaning of an admin event.
     *
     * @param resourceType the resource type name ({@code USER}, {@code GROUP_MEMBERSHIP},
     *     {@code CLIENT_ROLE_MAPPING}, {@code ORGANIZATION_MEMBERSHIP})
     * @param operation the operation name ({@code CREATE}, {@code UPDATE}, {@code DELETE})
     * @param resourcePath the path relative to the realm, e.g. {@code users/ID/groups/GID}
     * @return the change, or empty when the webhook does not report it
     */
    public static Optional<AdminChange> adminChange(String resourceType, String operation,
                                                    String resourcePath) {
        if (resourceType == null || operation == null || resourcePath == null) {
            return Optional.empty();
        }
        String[] p = resourcePath.split("/");
        boolean create = "CREATE".equals(operation);
        boolean delete = "DELETE".equals(operation);
        switch (resourceType) {
            case "USER":
                if (p.length == 2 && "users".equals(p[0])) {
                    if ("UPDATE".equals(operation)) {
                        return Optional.of(new AdminChange("user-updated", p[1], null, null, null));
                    }
                    if (delete) {
                        return Optional.of(new AdminChange("deleted", p[1], null, null, null));
                    }
                }
                return Optional.empty();
            case "GROUP_MEMBERSHIP":
                if (p.length == 4 && "users".equals(p[0]) && "groups".equals(p[2])
                        && (create || delete)) {
                    String kind = create ? "group-added" : "group-removed";
                    return Optional.of(new AdminChange(kind, p[1], p[3], null, null));
                }
                return Optional.empty();
            case "CLIENT_ROLE_MAPPING":
                if (p.length == 5 && "role-mappings".equals(p[2]) && "clients".equals(p[3])
                        && (create || delete)) {
                    // One kind for both targets: a group's change has no user (aboutGroup).
                    String kind = create ? "roles-added" : "roles-removed";
                    if ("users".equals(p[0])) {
                        return Optional.of(new AdminChange(kind, p[1], null, p[4], null));
                    }
                    if ("groups".equals(p[0])) {
                        return Optional.of(new AdminChange(kind, null, p[1], p[4], null));
                    }
                }
                return Optional.empty();
            case "ORGANIZATION_MEMBERSHIP":
                if (p.length == 4 && "organizations".equals(p[0]) && "members".equals(p[2])
                        && (create || delete)) {
                    String kind = create ? "organization-joined" : "organization-left";
                    return Optional.of(new AdminChange(kind, p[3], null, null, p[1]));
                }
                return Optional.empty();
            default:
                return Optional.empty();
        }
    }
}
