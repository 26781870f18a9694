package org.sellerconnector.keycloak.guard;

import java.util.Collection;
import java.util.Locale;

/**
 * When the guard's user profile validator refuses a change: pure functions, unit-tested without
 * a server.
 *
 * <p>Usernames and emails are compared trimmed and lower-cased (Keycloak stores them so); other
 * attributes trimmed only. A missing value and an empty one are the same, so removing a value is
 * a change.
 */
public final class PrimaryIdentityPolicy {

    /** Whose values of an attribute the guard keeps for the connector ({@code applies-to}). */
    public enum Scope {
        /** A seller's primary user only ({@code primary}). */
        PRIMARY,
        /**
         * Every seller user, primary or secondary ({@code seller}; the default on
         * {@code username} and {@code email}): the connector owns the identities it provisions
         * (the store is their source of truth).
         */
        SELLER,
        /** Every user, on creation too ({@code everyone}; the seller attributes). */
        EVERYONE
    }

    private PrimaryIdentityPolicy() {
    }

    /**
     * The scope of the validator on one attribute.
     *
     * @param appliesTo the option {@code applies-to} ({@code primary}, {@code seller},
     *     {@code everyone}), or null when it is not set
     * @param attribute the attribute the validator is set on
     * @return the option's scope; when not set, {@link Scope#SELLER} on {@code username} and
     *     {@code email} (a seller user's username and email are its userName and primary email
     *     in the connector, which changes them) and {@link Scope#PRIMARY} elsewhere
     */
    public static Scope scope(String appliesTo, String attribute) {
        String option = appliesTo == null ? "" : appliesTo.strip().toLowerCase(Locale.ROOT);
        return switch (option) {
            case "everyone" -> Scope.EVERYONE;
            case "seller" -> Scope.SELLER;
            case "primary" -> Scope.PRIMARY;
            default -> "username".equals(attribute) || "email".equals(attribute)
                    ? Scope.SELLER : Scope.PRIMARY;
        };
    }

    /**
     * Whether the guard covers this user for an attribute of this scope.
     *
     * @param scope the validator's scope ({@link #scope})
     * @param sellerUser whether the user exists and carries a seller id
     * @param primary whether it is its seller's primary user
     * @return true when a change of the value is the connector's alone
     */
    public static boolean guarded(Scope scope, boolean sellerUser, boolean primary) {
        return switch (scope) {
            case EVERYONE -> true;
            case SELLER -> sellerUser;
            case PRIMARY -> sellerUser && primary;
        };
    }

    /**
     * The value a user profile validator is given: a list of values (the first non-blank
     * counts), a single string, or nothing.
     *
     * @param input the validator's input
     * @param ignoreCase whether to lower-case it (usernames and emails)
     * @return the value, normalised; empty when there is none
     */
    public static String wanted(Object input, boolean ignoreCase) {
        Object value = input;
        if (input instanceof Collection<?> values) {
            value = values.stream().filter(v -> v != null && !v.toString().isBlank())
                    .findFirst().orElse(null);
        }
        return normalise(value == null ? null : value.toString(), ignoreCase);
    }

    /**
     * @param value a stored value (may be null)
     * @param ignoreCase whether to lower-case it
     * @return trimmed (and lower-cased); empty for null
     */
    public static String normalise(String value, boolean ignoreCase) {
        String trimmed = value == null ? "" : value.strip();
        return ignoreCase ? trimmed.toLowerCase(Locale.ROOT) : trimmed;
    }

    /**
     * Whether the requested value differs from the stored one.
     *
     * @param current the stored value (null for a user being created)
     * @param input the validator's input
     * @param ignoreCase whether case is irrelevant (usernames and emails)
     * @return true for a change, a removal, or a new value
     */
    public static boolean changes(String current, Object input, boolean ignoreCase) {
        return !normalise(current, ignoreCase).equals(wanted(input, ignoreCase));
    }

    /**
     * Whether to refuse.
     *
     * @param guarded whether the rule covers this user (every seller user for its username and
     *     email; everyone for the seller attributes)
     * @param changes whether the value changes ({@link #changes})
     * @param byConnector whether seller-connector's own service account asks
     * @return true when a guarded value changes and the connector does not ask
     */
    public static boolean refuse(boolean guarded, boolean changes, boolean byConnector) {
        return guarded && changes && !byConnector;
    }
}
