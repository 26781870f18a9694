package org.sellerconnector.keycloak.bulk;

import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TreeSet;

/**
 * What to change on one user so that Keycloak holds what the connector sent: a pure comparison
 * of the user as Keycloak has it with the request, so that an unchanged user costs reads only.
 *
 * @param profile whether username, email, names or seller attributes differ (one profile update)
 * @param enabled whether the enabled flag differs
 * @param rolesToAdd portal roles to map directly
 * @param rolesToRemove portal roles to unmap
 * @param groupsToJoin managed groups (by id) to join
 * @param groupsToLeave managed groups (by id) to leave
 * @param joinOrganization whether the user must become a member of the organization
 * @param endSessions whether the user is to be disabled: its sessions end (as the admin API's
 *     logout does), also when it was disabled before but still has sessions
 */
public record UserPlan(boolean profile, boolean enabled, Set<String> rolesToAdd,
                       Set<String> rolesToRemove, Set<String> groupsToJoin,
                       Set<String> groupsToLeave, boolean joinOrganization, boolean endSessions) {

    /**
     * The user as Keycloak has it (for a user to create: {@link #NONE}).
     *
     * @param username stored lower-cased by Keycloak
     * @param email stored lower-cased by Keycloak, or null
     * @param firstName or null
     * @param lastName or null
     * @param enabled the enabled flag
     * @param attributes the seller attributes it carries
     * @param roles its direct portal role names
     * @param groups the ids of its groups under the root group
     * @param member whether it is a member of the seller's organization
     */
    public record Current(String username, String email, String firstName, String lastName,
                          boolean enabled, Map<String, List<String>> attributes,
                          Set<String> roles, Set<String> groups, boolean member) {
    }

    /** A user that does not exist yet. */
    public static final Current NONE =
            new Current(null, null, null, null, false, Map.of(), Set.of(), Set.of(), false);

    /**
     * Compare.
     *
     * @param current the user as Keycloak has it ({@link #NONE} for a new one)
     * @param wanted the user as the connector sent it
     * @return what to change
     */
    public static UserPlan of(Current current, BulkUsersRequest.User wanted) {
        boolean profile = !lower(wanted.username).equals(lower(current.username()))
                || (wanted.email != null && !lower(wanted.email).equals(lower(current.email())))
                || (wanted.firstName != null && !wanted.firstName.equals(current.firstName()))
                || (wanted.lastName != null && !wanted.lastName.equals(current.lastName()));
        if (wanted.attributes != null) {
            for (Map.Entry<String, List<String>> entry : wanted.attributes.entrySet()) {
                List<String> have = current.attributes().get(entry.getKey());
                if (!Objects.equals(have == null ? List.of() : have, entry.getValue())) {
                    profile = true;
                }
            }
        }
        boolean enable = Boolean.TRUE.equals(wanted.enabled);
        Set<String> roles = wanted.roles == null ? Set.of() : Set.copyOf(wanted.roles);
        Set<String> groups = wanted.groups == null ? Set.of() : Set.copyOf(wanted.groups);
        return new UserPlan(
                profile,
                enable != current.enabled(),
                minus(roles, current.roles()),
                minus(current.roles(), roles),
                minus(groups, current.groups()),
                minus(current.groups(), groups),
                !current.member(),
                !enable);
    }

    /** @return whether anything is written (sessions aside) */
    public boolean changes() {
        return profile || enabled || !rolesToAdd.isEmpty() || !rolesToRemove.isEmpty()
                || !groupsToJoin.isEmpty() || !groupsToLeave.isEmpty() || joinOrganization;
    }

    private static Set<String> minus(Set<String> a, Set<String> b) {
        Set<String> out = new TreeSet<>(a);
        out.removeAll(b);
        return out;
    }

    private static String lower(String value) {
        return value == null ? "" : value.trim().toLowerCase(Locale.ROOT);
    }
}
