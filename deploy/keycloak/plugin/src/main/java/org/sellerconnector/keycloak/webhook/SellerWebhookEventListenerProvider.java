package org.sellerconnector.keycloak.webhook;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

import org.keycloak.events.Event;
import org.keycloak.events.EventListenerProvider;
import org.keycloak.events.admin.AdminEvent;
import org.keycloak.events.admin.AuthDetails;
import org.keycloak.models.AbstractKeycloakTransaction;
import org.keycloak.models.ClientModel;
import org.keycloak.models.GroupModel;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.KeycloakTransactionManager;
import org.keycloak.models.RealmModel;
import org.keycloak.models.UserModel;
import org.keycloak.models.utils.KeycloakModelUtils;
import org.sellerconnector.keycloak.SellerNames;
import org.sellerconnector.keycloak.SellerUser;
import org.sellerconnector.keycloak.guard.PrimaryUserGuard;

/**
 * Turns the events of one Keycloak session into webhook payloads: only events about seller
 * users (users with a seller id attribute) and seller groups ({@code /sellers/...}; for portal
 * role mappings the root group too), and not the connector's own admin calls
 * ({@code ignore-clients}). Payloads are built at once, while the models can still be
 * read, and handed to the {@link WebhookSender} only after the session's transaction commits:
 * a rolled-back change is never reported.
 */
public final class SellerWebhookEventListenerProvider implements EventListenerProvider {

    private final KeycloakSession session;
    private final WebhookConfig config;
    private final WebhookSender sender;
    private final SellerNames names;
    private final List<WebhookPayload> pending = new ArrayList<>();
    private boolean enlisted;

    /**
     * @param session the session whose events this instance sees
     * @param config the configuration
     * @param sender where committed payloads go (null when the webhook is off)
     */
    public SellerWebhookEventListenerProvider(KeycloakSession session, WebhookConfig config,
                                              WebhookSender sender) {
        this.session = session;
        this.config = config;
        this.sender = sender;
        this.names = config.names();
    }

    @Override
    public void onEvent(Event event) {
        if (sender == null || event.getError() != null || event.getType() == null) {
            return;
        }
        Optional<String> kind =
                EventClassifier.userEventKind(event.getType().name(), event.getDetails());
        if (kind.isEmpty() || event.getUserId() == null) {
            return;
        }
        RealmModel realm = session.realms().getRealm(event.getRealmId());
        if (realm == null) {
            return;
        }
        UserModel model = session.users().getUserById(realm, event.getUserId());
        SellerUser user = SellerUser.of(model, names);
        if (user == null) {
            return;
        }
        queue(new WebhookPayload(event.getId(), "user-event", event.getType().name(), kind.get(),
                event.getTime(), realm.getName())
                .with("user", user.toJson())
                .with("client_id", event.getClientId()));
    }

    @Override
    public void onEvent(AdminEvent event, boolean includeRepresentation) {
        if (sender == null || event.getError() != null || event.getResourceType() == null
                || event.getOperationType() == null) {
            return;
        }
        Optional<AdminChange> parsed = EventClassifier.adminChange(
                event.getResourceType().name(), event.getOperationType().name(),
                event.getResourcePath());
        if (parsed.isEmpty()) {
            return;
        }
        RealmModel realm = session.realms().getRealm(event.getRealmId());
        Map<String, Object> by = actor(event.getAuthDetails());
        if (realm == null || by == null) {
            return;
        }
        AdminChange change = parsed.get();
        String type = event.getResourceType().name() + "/" + event.getOperationType().name();
        WebhookPayload payload = change.aboutGroup()
                ? groupPayload(event, realm, change, type)
                : userPayload(event, realm, change, type);
        if (payload != null) {
            queue(payload.with("by", by));
        }
    }

    private WebhookPayload userPayload(AdminEvent event, RealmModel realm, AdminChange change,
                                       String type) {
        UserModel model = session.users().getUserById(realm, change.userId());
        SellerUser user = SellerUser.of(model, names);
        if (user == null && "deleted".equals(change.kind())) {
            user = PrimaryUserGuard.removedSellerUser(session, change.userId());
        }
        if (user == null) {
            return null;
        }
        String kind = change.kind();
        if ("user-updated".equals(kind)) {
            String representation = event.getRepresentation();
            if (representation != null && !WebhookPayload.setsEnabled(representation)) {
                return null; // an update that leaves enabled alone is not tracked
            }
            kind = model.isEnabled() ? "enabled" : "disabled";
        }
        WebhookPayload payload = new WebhookPayload(event.getId(), "admin-event", type, kind,
                event.getTime(), realm.getName()).with("user", user.toJson());
        if (change.groupId() != null) {
            Map<String, Object> group = sellerGroup(realm, change.groupId(), false);
            if (group == null) {
                return null;
            }
            payload.with("group", group);
        }
        if (change.clientUuid() != null) {
            if (!isPortalClient(realm, change.clientUuid())) {
                return null;
            }
            payload.with("roles", WebhookPayload.roleNames(event.getRepresentation()))
                    .with("client_id", names.portalClientId());
        }
        if (change.organizationId() != null) {
            payload.with("organization_id", change.organizationId());
        }
        return payload;
    }

    /**
     * Portal roles mapped to or from a group at or under the root: a permission set's group, a
     * seller's group or the root itself (the roles of the last two are inherited by every set
     * group below them). The payload has no user.
     */
    private WebhookPayload groupPayload(AdminEvent event, RealmModel realm, AdminChange change,
                                        String type) {
        Map<String, Object> group = sellerGroup(realm, change.groupId(), true);
        if (group == null || !isPortalClient(realm, change.clientUuid())) {
            return null;
        }
        return new WebhookPayload(event.getId(), "admin-event", type, change.kind(),
                event.getTime(), realm.getName())
                .with("group", group)
                .with("roles", WebhookPayload.roleNames(event.getRepresentation()))
                .with("client_id", names.portalClientId());
    }

    private Map<String, Object> sellerGroup(RealmModel realm, String groupId,
                                            boolean rootToo) {
        GroupModel group = realm.getGroupById(groupId);
        if (group == null) {
            return null;
        }
        String path = KeycloakModelUtils.buildGroupPath(group);
        if (!(rootToo ? names.isUnderGroupRoot(path) : names.isSellerGroupPath(path))) {
            return null;
        }
        // Names are display names: which seller and set the group is comes from its attributes.
        Map<String, Object> json = new LinkedHashMap<>();
        json.put("id", group.getId());
        json.put("path", path);
        json.put("name", group.getName());
        // Left out when absent: the connector then reads a legacy id-named path.
        putIfPresent(json, "seller_id", group.getFirstAttribute(names.sellerIdAttribute()));
        putIfPresent(json, "permission_set_id",
                group.getFirstAttribute(names.permissionSetIdAttribute()));
        return json;
    }

    private static void putIfPresent(Map<String, Object> json, String key, String value) {
        if (value != null && !value.isBlank()) {
            json.put(key, value);
        }
    }

    private boolean isPortalClient(RealmModel realm, String clientUuid) {
        ClientModel client = clientUuid == null ? null : realm.getClientById(clientUuid);
        return client != null && names.portalClientId().equals(client.getClientId());
    }

    /** Who made an admin change; null for the connector's own calls (not console changes). */
    private Map<String, Object> actor(AuthDetails auth) {
        Map<String, Object> by = new LinkedHashMap<>();
        if (auth == null) {
            return by;
        }
        RealmModel authRealm =
                auth.getRealmId() == null ? null : session.realms().getRealm(auth.getRealmId());
        String clientId = null;
        if (authRealm != null && auth.getClientId() != null) {
            ClientModel client = authRealm.getClientById(auth.getClientId());
            clientId = client == null ? null : client.getClientId();
        }
        if (clientId != null && config.ignoredClients().contains(clientId)) {
            return null;
        }
        by.put("realm", authRealm == null ? auth.getRealmId() : authRealm.getName());
        by.put("user_id", auth.getUserId());
        by.put("client_id", clientId);
        return by;
    }

    private void queue(WebhookPayload payload) {
        KeycloakTransactionManager transactions = session.getTransactionManager();
        if (transactions == null || !transactions.isActive()) {
            sender.submit(payload);
            return;
        }
        pending.add(payload);
        if (!enlisted) {
            enlisted = true;
            transactions.enlistAfterCompletion(new AbstractKeycloakTransaction() {
                @Override
                protected void commitImpl() {
                    pending.forEach(sender::submit);
                    pending.clear();
                    enlisted = false;
                }

                @Override
                protected void rollbackImpl() {
                    pending.clear();
                    enlisted = false;
                }
            });
        }
    }

    @Override
    public void close() {
        // Nothing held per session beyond the pending list, which the transaction drains.
    }
}
