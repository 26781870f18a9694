package org.sellerconnector.keycloak.bulk;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;

import jakarta.ws.rs.Consumes;
import jakarta.ws.rs.GET;
import jakarta.ws.rs.POST;
import jakarta.ws.rs.Path;
import jakarta.ws.rs.Produces;
import jakarta.ws.rs.core.MediaType;
import jakarta.ws.rs.core.Response;

import org.jboss.logging.Logger;
import org.keycloak.common.util.Time;
import org.keycloak.events.admin.OperationType;
import org.keycloak.events.admin.ResourceType;
import org.keycloak.models.ClientModel;
import org.keycloak.models.GroupModel;
import org.keycloak.models.KeycloakContext;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.ModelDuplicateException;
import org.keycloak.models.OrganizationModel;
import org.keycloak.models.RealmModel;
import org.keycloak.models.RoleModel;
import org.keycloak.models.UserModel;
import org.keycloak.models.UserSessionModel;
import org.keycloak.models.utils.KeycloakModelUtils;
import org.keycloak.organization.OrganizationProvider;
import org.keycloak.services.managers.AppAuthManager;
import org.keycloak.services.managers.AuthenticationManager;
import org.keycloak.services.resources.admin.AdminAuth;
import org.keycloak.services.resources.admin.AdminEventBuilder;
import org.keycloak.services.resources.admin.fgap.AdminPermissionEvaluator;
import org.keycloak.services.resources.admin.fgap.AdminPermissions;
import org.keycloak.userprofile.UserProfile;
import org.keycloak.userprofile.UserProfileContext;
import org.keycloak.userprofile.UserProfileProvider;
import org.keycloak.userprofile.ValidationException;
import org.sellerconnector.keycloak.SellerNames;

/**
 * {@code /realms/{realm}/seller-connector}: seller-connector's bulk path into Keycloak.
 *
 * <p>{@code POST users} upserts one chunk of one seller's users in ONE request and ONE
 * transaction: each user's username, email, names, enabled flag and seller attributes (through
 * the realm's user profile, validators included, as the admin API does), its direct portal client
 * roles, its groups under the root group, and its membership of the seller's organization. A
 * disabled user's sessions end, as the admin API's logout does. Each user is compared first, so
 * an unchanged user costs reads only; each changed one gets an admin event, as through the
 * admin API. Answers 200 with one result per user, in order:
 * {@code {"connectorId", "id", "outcome": "created|updated|unchanged"}}, or
 * {@code {"connectorId", "status", "error"}} for a user refused before anything of it was
 * written: 409 a username or email another user holds, 400 a profile validation error, 404 a
 * role of the portal client or a group that does not exist, 403 a group outside the root group.
 * Any other failure of a user is that user's alone too (500): each user is one transaction.
 *
 * <p><b>Who may call it.</b> The caller's bearer token is checked as the admin API checks it,
 * for this realm; then the caller must be the service account of the connector's own client
 * ({@code connector-client-id}, default {@code seller-connector}) and hold what the same
 * changes need through the admin API, checked with the same permission evaluator (fine-grained
 * admin permissions v2 included): manage users (realm-wide, as creating users needs), manage
 * the organization, map each role, manage the membership of each group. So it never lets the
 * connector do what its roles would not let it do one call at a time; it only narrows: roles of
 * the portal client alone, groups under the root group alone, the seller attributes alone.
 *
 * <p>{@code GET} (the resource itself) answers {@code {"version": 1, "maxUsers": n}} to the same
 * caller: the connector probes it once to choose this path.
 */
public final class SellerUsersResource {

    private static final Logger LOG = Logger.getLogger(SellerUsersResource.class);
    static final int VERSION = 1;

    private final KeycloakSession session;
    private final SellerNames names;
    private final int maxUsers;

    SellerUsersResource(KeycloakSession session, SellerNames names, int maxUsers) {
        this.session = session;
        this.names = names;
        this.maxUsers = maxUsers;
    }

    /** The caller, authenticated and checked. */
    private record Caller(AdminAuth auth, AdminPermissionEvaluator permissions) {
    }

    /** A user refused before anything of it was written. */
    private static final class Refused extends Exception {
        private static final long serialVersionUID = 1L;
        final int status;

        Refused(int status, String message) {
            super(message, null, false, false);
            this.status = status;
        }
    }

    /**
     * What this endpoint accepts.
     *
     * @return {@code {"version", "maxUsers"}}
     */
    @GET
    @Produces(MediaType.APPLICATION_JSON)
    public Response info() {
        Caller caller = authenticate();
        if (caller == null) {
            return unauthorized();
        }
        Response refused = requireConnector(caller);
        if (refused != null) {
            return refused;
        }
        return Response.ok(Map.of("version", VERSION, "maxUsers", maxUsers)).build();
    }

    /**
     * Upsert one chunk of one seller's users (see the class comment).
     *
     * @param request the chunk
     * @return one result per user
     */
    @POST
    @Path("users")
    @Consumes(MediaType.APPLICATION_JSON)
    @Produces(MediaType.APPLICATION_JSON)
    public Response upsertUsers(BulkUsersRequest request) {
        Caller caller = authenticate();
        if (caller == null) {
            return unauthorized();
        }
        Response refused = requireConnector(caller);
        if (refused != null) {
            return refused;
        }
        List<String> problems = request == null ? List.of("a JSON body is required")
                : request.problems(names, maxUsers);
        if (!problems.isEmpty()) {
            int status = request != null && request.users != null && request.users.size() > maxUsers
                    ? 413 : 400;
            return error(status, "invalid_request", String.join("; ", problems));
        }
        RealmModel realm = session.getContext().getRealm();
        OrganizationProvider organizations = session.getProvider(OrganizationProvider.class);
        OrganizationModel organization = organizations == null ? null
                : organizations.getById(request.organizationId);
        if (organization == null) {
            return error(404, "organization_not_found",
                    "No organization " + request.organizationId + " in realm " + realm.getName());
        }
        caller.permissions().orgs().requireManage(organization);
        ClientModel portal = realm.getClientByClientId(names.portalClientId());
        if (portal == null) {
            return error(404, "client_not_found", "No client " + names.portalClientId());
        }
        Map<String, RoleModel> roles = resolveRoles(caller, portal, request.users);
        Map<String, GroupModel> groups = resolveGroups(caller, realm, request.users);

        Map<String, String> roleIds = new HashMap<>();
        roles.forEach((name, role) -> roleIds.put(name, role.getId()));
        Set<String> groupIds = new HashSet<>();
        groups.forEach((id, group) -> {
            if (group != null) {
                groupIds.add(id);
            }
        });
        Chunk chunk = new Chunk(caller, realm.getId(), organization.getId(), portal.getId(),
                roleIds, groupIds, session.getContext());
        List<Map<String, Object>> results = new ArrayList<>(request.users.size());
        int written = 0;
        for (BulkUsersRequest.User wanted : request.users) {
            Map<String, Object> result;
            try {
                // One transaction per user: a user is written whole or not at all, one user's
                // failure (a concurrent create of the same username) is that user's alone, and
                // the persistence context stays small (one large transaction made every
                // flush walk every user written before it: quadratic in the chunk's size).
                result = KeycloakModelUtils.runJobInTransactionWithResult(
                        session.getKeycloakSessionFactory(), session.getContext(),
                        inner -> {
                            try {
                                return apply(inner, chunk, wanted);
                            } catch (Refused refusal) {
                                throw new RefusedRuntime(refusal);
                            }
                        }, "seller-connector bulk user");
            } catch (RefusedRuntime refusal) {
                result = failure(wanted, refusal.refused.status, refusal.refused.getMessage());
            } catch (ModelDuplicateException conflict) {
                result = failure(wanted, 409, "A concurrent change took this user's username or "
                        + "email: nothing of it was written; retry it");
            } catch (RuntimeException unexpected) {
                LOG.warnf(unexpected, "seller-connector bulk: user %s failed", wanted.connectorId);
                result = failure(wanted, 500, "Keycloak failed to write this user ("
                        + unexpected.getClass().getSimpleName() + "); nothing of it was written");
            }
            if ("created".equals(result.get("outcome")) || "updated".equals(result.get("outcome"))) {
                written++;
            }
            results.add(result);
        }
        LOG.debugf("seller-connector bulk: %d users, %d written", results.size(), written);
        return Response.ok(Map.of("results", results)).build();
    }

    // ------------------------------------------------------------------ one user

    /** What every user of a chunk shares, by id: each user's transaction reads its own models. */
    private record Chunk(Caller caller, String realmId, String organizationId, String portalId,
                         Map<String, String> roleIds, Set<String> groupIds,
                         KeycloakContext request) {
    }

    /** A refusal carried out of a transaction job (which may throw unchecked only). */
    private static final class RefusedRuntime extends RuntimeException {
        private static final long serialVersionUID = 1L;
        final transient Refused refused;

        RefusedRuntime(Refused refused) {
            super(refused.getMessage(), null, false, false);
            this.refused = refused;
        }
    }

    private static Map<String, Object> failure(BulkUsersRequest.User wanted, int status,
                                               String message) {
        Map<String, Object> result = new LinkedHashMap<>();
        result.put("connectorId", wanted.connectorId);
        result.put("status", status);
        result.put("error", message);
        return result;
    }

    /**
     * Upsert one user in its own session and transaction ({@code s}).
     *
     * <p>The caller's permissions were checked once for the chunk, with the admin API's own
     * evaluator: realm-wide manage-users (what creating a user through the admin API needs,
     * and which implies managing, mapping roles of and managing group membership of any user),
     * mapping each role, managing each group's membership, managing the organization. So no
     * per-user check could refuse what those allow.
     */
    private Map<String, Object> apply(KeycloakSession s, Chunk chunk, BulkUsersRequest.User wanted)
            throws Refused {
        // The user profile's validators (the primary identity guard) read the caller's token.
        s.getContext().setBearerToken(chunk.caller().auth().getToken());
        RealmModel realm = s.realms().getRealm(chunk.realmId());
        s.getContext().setRealm(realm);
        ClientModel portal = realm.getClientById(chunk.portalId());
        OrganizationProvider organizations = s.getProvider(OrganizationProvider.class);
        OrganizationModel organization = organizations.getById(chunk.organizationId());
        List<RoleModel> wantedRoles = new ArrayList<>();
        for (String name : wanted.roles == null ? List.<String>of() : wanted.roles) {
            String roleId = chunk.roleIds().get(name);
            RoleModel role = roleId == null ? null : realm.getRoleById(roleId);
            if (role == null) {
                // Not found: the connector creates its catalogue's roles before it sends them, so
                // one missing was deleted meanwhile (it reloads its catalogue and retries).
                throw new Refused(404, "No client role " + name + " on " + names.portalClientId());
            }
            wantedRoles.add(role);
        }
        Map<String, GroupModel> groups = new HashMap<>();
        for (String id : wanted.groups == null ? List.<String>of() : wanted.groups) {
            GroupModel group = realm.getGroupById(id);
            if (group == null) {
                throw new Refused(404, "No group " + id);
            }
            if (!chunk.groupIds().contains(id)) {
                // A group outside the connector's reach: never joined through this endpoint.
                throw new Refused(403, "The group " + id + " is not under /" + names.groupRoot());
            }
            groups.put(id, group);
        }
        UserModel user = find(s, realm, wanted);
        boolean created = user == null;
        UserPlan.Current current = created ? UserPlan.NONE : current(user, portal, organizations,
                organization);
        UserPlan plan = UserPlan.of(current, wanted);
        if (created || plan.profile()) {
            checkClashes(s, realm, user, wanted);
        }
        UserProfileProvider profiles = s.getProvider(UserProfileProvider.class);
        if (created) {
            UserProfile profile = profiles.create(UserProfileContext.USER_API,
                    profileAttributes(Map.of(), wanted));
            validate(profile);
            user = profile.create();
            user.setEnabled(Boolean.TRUE.equals(wanted.enabled));
            user.setEmailVerified(false);
        } else {
            if (plan.profile()) {
                UserProfile profile = profiles.create(UserProfileContext.USER_API,
                        profileAttributes(user.getAttributes(), wanted), user);
                validate(profile);
                profile.update(false);
            }
            if (plan.enabled()) {
                user.setEnabled(Boolean.TRUE.equals(wanted.enabled));
            }
        }
        for (RoleModel role : wantedRoles) {
            if (plan.rolesToAdd().contains(role.getName())) {
                user.grantRole(role);
            }
        }
        for (String name : plan.rolesToRemove()) {
            RoleModel role = portal.getRole(name);
            if (role != null) {
                // Unmapping is mapping too: checked as the admin API checks a DELETE.
                chunk.caller().permissions().roles().requireMapRole(role);
                user.deleteRoleMapping(role);
            }
        }
        for (String id : plan.groupsToJoin()) {
            user.joinGroup(groups.get(id));
        }
        for (String id : plan.groupsToLeave()) {
            GroupModel group = realm.getGroupById(id);
            if (group != null) {
                chunk.caller().permissions().groups().requireManageMembership(group);
                user.leaveGroup(group);
            }
        }
        if (plan.joinOrganization()) {
            // As POST /organizations/{id}/members: an unmanaged member (never deleted with it).
            organizations.addMember(organization, user);
        }
        if (plan.endSessions() && !created) {
            endSessions(s, chunk.request(), realm, user, current.enabled());
        }
        String outcome = created ? "created" : plan.changes() ? "updated" : "unchanged";
        if (!"unchanged".equals(outcome)) {
            // As the admin API records each change of a user (when the realm stores admin
            // events), in the same transaction as the change.
            new AdminEventBuilder(realm, chunk.caller().auth(), s, chunk.request().getConnection())
                    .resource(ResourceType.USER)
                    .operation(created ? OperationType.CREATE : OperationType.UPDATE)
                    .resourcePath("users", user.getId())
                    .representation(representation(user, wanted))
                    .success();
        }
        Map<String, Object> result = new LinkedHashMap<>();
        result.put("connectorId", wanted.connectorId);
        result.put("id", user.getId());
        result.put("outcome", outcome);
        return result;
    }

    /** The user of this connector id: by the Keycloak id the connector knows, else by attribute. */
    private UserModel find(KeycloakSession s, RealmModel realm, BulkUsersRequest.User wanted) {
        if (wanted.id != null && !wanted.id.isBlank()) {
            UserModel byId = s.users().getUserById(realm, wanted.id);
            if (byId != null) {
                String tag = byId.getFirstAttribute(names.connectorIdAttribute());
                if (tag == null || tag.equals(wanted.connectorId)) {
                    return byId;
                }
            }
        }
        return s.users()
                .searchForUserByUserAttributeStream(realm, names.connectorIdAttribute(),
                        wanted.connectorId)
                .filter(u -> wanted.connectorId.equals(
                        u.getFirstAttribute(names.connectorIdAttribute())))
                .findFirst()
                .orElse(null);
    }

    private UserPlan.Current current(UserModel user, ClientModel portal,
                                     OrganizationProvider organizations,
                                     OrganizationModel organization) {
        Map<String, List<String>> attributes = new HashMap<>();
        for (String name : List.of(names.sellerIdAttribute(), names.roleAttribute(),
                names.connectorIdAttribute())) {
            List<String> values = user.getAttributeStream(name).toList();
            if (!values.isEmpty()) {
                attributes.put(name, values);
            }
        }
        Set<String> roles = user.getClientRoleMappingsStream(portal).map(RoleModel::getName)
                .collect(Collectors.toSet());
        Set<String> groups = user.getGroupsStream().filter(this::underRoot).map(GroupModel::getId)
                .collect(Collectors.toSet());
        return new UserPlan.Current(user.getUsername(), user.getEmail(), user.getFirstName(),
                user.getLastName(), user.isEnabled(), attributes, roles, groups,
                organizations.isMember(organization, user));
    }

    /** Refuse a username or email that another user holds (before anything is written). */
    private void checkClashes(KeycloakSession s, RealmModel realm, UserModel user,
                              BulkUsersRequest.User wanted) throws Refused {
        UserModel other = s.users().getUserByUsername(realm, wanted.username);
        if (other == null && wanted.email != null && !wanted.email.isBlank()
                && !realm.isDuplicateEmailsAllowed()) {
            other = s.users().getUserByEmail(realm, wanted.email);
        }
        if (other != null && (user == null || !other.getId().equals(user.getId()))) {
            String tag = other.getFirstAttribute(names.connectorIdAttribute());
            throw new Refused(409, tag == null
                    ? "Keycloak already has a user with username " + wanted.username
                        + " or email " + wanted.email + " that seller-connector does not manage"
                        + " (it has no " + names.connectorIdAttribute() + " attribute)"
                    : "Keycloak already has another seller-connector user with username "
                        + wanted.username + " or email " + wanted.email);
        }
    }

    private static Map<String, List<String>> profileAttributes(Map<String, List<String>> base,
                                                               BulkUsersRequest.User wanted) {
        Map<String, List<String>> attributes = new HashMap<>(base);
        attributes.putAll(wanted.attributes);
        attributes.put(UserModel.USERNAME, List.of(wanted.username));
        if (wanted.email != null) {
            attributes.put(UserModel.EMAIL, List.of(wanted.email));
        }
        if (wanted.firstName != null) {
            attributes.put(UserModel.FIRST_NAME, List.of(wanted.firstName));
        }
        if (wanted.lastName != null) {
            attributes.put(UserModel.LAST_NAME, List.of(wanted.lastName));
        }
        return attributes;
    }

    private static void validate(UserProfile profile) throws Refused {
        try {
            profile.validate();
        } catch (ValidationException invalid) {
            int status = invalid.getStatusCode() == null ? 400 : invalid.getStatusCode().getStatusCode();
            throw new Refused(status, "The user profile refused the user: " + invalid.getErrors()
                    .stream().map(e -> e.getAttribute() + ": " + e.getMessage())
                    .collect(Collectors.joining(", ")));
        }
    }

    /** As {@code POST /users/{id}/logout}: tokens issued before now are refused, sessions end. */
    private static void endSessions(KeycloakSession s, KeycloakContext request, RealmModel realm,
                                    UserModel user, boolean wasEnabled) {
        List<UserSessionModel> sessions = s.sessions().getUserSessionsStream(realm, user).toList();
        if (!wasEnabled && sessions.isEmpty()) {
            return; // disabled before, and logged out then
        }
        s.users().setNotBeforeForUser(realm, user, Time.currentTime());
        for (UserSessionModel userSession : sessions) {
            AuthenticationManager.backchannelLogout(s, realm, userSession, request.getUri(),
                    request.getConnection(), request.getRequestHeaders(), true);
        }
    }

    private Map<String, Object> representation(UserModel user, BulkUsersRequest.User wanted) {
        Map<String, Object> rep = new LinkedHashMap<>();
        rep.put("id", user.getId());
        rep.put("username", user.getUsername());
        rep.put("email", user.getEmail());
        rep.put("firstName", user.getFirstName());
        rep.put("lastName", user.getLastName());
        rep.put("enabled", user.isEnabled());
        rep.put("attributes", wanted.attributes);
        rep.put("clientRoles", Map.of(names.portalClientId(),
                wanted.roles == null ? List.of() : wanted.roles));
        rep.put("groups", wanted.groups == null ? List.of() : wanted.groups);
        return rep;
    }

    // ------------------------------------------------------------------ roles and groups

    /** The portal roles the chunk names, each checked once as the admin API checks a mapping. */
    private Map<String, RoleModel> resolveRoles(Caller caller, ClientModel portal,
                                                List<BulkUsersRequest.User> users) {
        Set<String> wanted = new LinkedHashSet<>();
        for (BulkUsersRequest.User user : users) {
            if (user.roles != null) {
                wanted.addAll(user.roles);
            }
        }
        Map<String, RoleModel> roles = new HashMap<>();
        for (String name : wanted) {
            RoleModel role = portal.getRole(name);
            if (role != null) {
                caller.permissions().roles().requireMapRole(role);
                roles.put(name, role);
            }
        }
        return roles;
    }

    /** The groups the chunk names that are under the root group, each checked once. */
    private Map<String, GroupModel> resolveGroups(Caller caller, RealmModel realm,
                                                 List<BulkUsersRequest.User> users) {
        Map<String, GroupModel> groups = new HashMap<>();
        for (BulkUsersRequest.User user : users) {
            for (String id : user.groups == null ? List.<String>of() : user.groups) {
                if (groups.containsKey(id)) {
                    continue;
                }
                GroupModel group = realm.getGroupById(id);
                if (group != null && underRoot(group)) {
                    caller.permissions().groups().requireManageMembership(group);
                    groups.put(id, group);
                } else {
                    groups.put(id, null);
                }
            }
        }
        return groups;
    }

    /** Whether a group is below the root group (not the root itself): the connector's. */
    private boolean underRoot(GroupModel group) {
        GroupModel top = group;
        while (top.getParent() != null) {
            top = top.getParent();
        }
        return top != group && names.groupRoot().equals(top.getName());
    }

    // ------------------------------------------------------------------ the caller

    private Caller authenticate() {
        KeycloakContext context = session.getContext();
        RealmModel realm = context.getRealm();
        AuthenticationManager.AuthResult auth = new AppAuthManager.BearerTokenAuthenticator(session)
                .setRealm(realm)
                .setConnection(context.getConnection())
                .setHeaders(context.getRequestHeaders())
                .authenticate();
        if (auth == null) {
            return null;
        }
        // As the admin API does: the user profile's validators (the primary identity guard)
        // read who asks from the session's bearer token.
        context.setBearerToken(auth.token());
        AdminAuth adminAuth = new AdminAuth(realm, auth.token(), auth.user(), auth.client());
        return new Caller(adminAuth, AdminPermissions.evaluator(session, realm, adminAuth));
    }

    /** Only the connector's own service account, and only with manage-users (realm-wide). */
    private Response requireConnector(Caller caller) {
        ClientModel client = caller.auth().getClient();
        UserModel user = caller.auth().getUser();
        if (client == null || user == null || !names.connectorClientId().equals(client.getClientId())
                || !client.getId().equals(user.getServiceAccountClientLink())) {
            return error(403, "forbidden", "Only the service account of the "
                    + names.connectorClientId() + " client may call this endpoint");
        }
        if (!caller.permissions().users().canManage()) {
            return error(403, "forbidden", "The " + names.connectorClientId()
                    + " service account lacks manage-users");
        }
        return null;
    }

    private static Response unauthorized() {
        return error(401, "unauthorized", "A bearer token of this realm is required");
    }

    private static Response error(int status, String code, String message) {
        return Response.status(status).type(MediaType.APPLICATION_JSON)
                .entity(Map.of("error", code, "errorMessage", message)).build();
    }
}
