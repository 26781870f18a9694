package org.sellerconnector.keycloak.mapper;

import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * The compact {@code seller} claim: {@code {"id": seller id, "role": primary|secondary,
 * "permissions": {category: highest level}}}, computed from the names of a user's effective
 * portal client roles ({@code <category>:<level>}, levels {@code none < view < edit < admin}).
 *
 * <p>Only the highest level of each category is kept (the composites already make a higher
 * level imply the lower ones); {@code none}, unknown levels and names without a category are
 * ignored, so a category absent from the map means no access.
 */
public final class SellerClaim {

    /** The levels that grant something, lowest first. */
    public static final List<String> LEVELS = List.of("view", "edit", "admin");

    private SellerClaim() {
    }

    /**
     * Compute the claim.
     *
     * @param sellerId the seller id (required)
     * @param role the role attribute (may be null)
     * @param roleNames the user's effective portal client role names
     * @return the claim as nested maps (serialised to JSON in the token)
     */
    public static Map<String, Object> compute(String sellerId, String role,
                                              Collection<String> roleNames) {
        Map<String, Object> claim = new LinkedHashMap<>();
        claim.put("id", sellerId);
        claim.put("role", role);
        claim.put("permissions", highestLevels(roleNames));
        return claim;
    }

    /**
     * The highest level per category.
     *
     * @param roleNames role names such as {@code inventory:edit}
     * @return category to level, sorted by category
     */
    public static Map<String, String> highestLevels(Collection<String> roleNames) {
        Map<String, String> levels = new TreeMap<>();
        for (String name : roleNames) {
            int colon = name == null ? -1 : name.lastIndexOf(':');
            if (colon <= 0) {
                continue;
            }
            String category = name.substring(0, colon);
            String level = name.substring(colon + 1);
            int rank = LEVELS.indexOf(level);
            if (rank < 0) {
                continue;
            }
            String current = levels.get(category);
            if (current == null || LEVELS.indexOf(current) < rank) {
                levels.put(category, level);
            }
        }
        return levels;
    }
}
