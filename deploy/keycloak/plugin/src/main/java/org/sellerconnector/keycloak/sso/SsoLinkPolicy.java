package org.sellerconnector.keycloak.sso;

import java.util.Collection;
import java.util.Locale;

/**
 * Whether a corporate login may be linked to a provisioned seller user: a pure decision, so
 * that it is unit-tested without a server.
 *
 * <p>A seller's identity provider vouches only for its own people: the address it asserts must
 * belong to a user that SCIM (or directory sync) provisioned for the same seller, in one of the
 * domains the seller's organization linked to that provider, and that user must be enabled.
 * Otherwise a corporate IdP could assert another seller's address and take over that account.
 */
public final class SsoLinkPolicy {

    /** Why a link is refused. */
    public enum Refusal {
        /** The IdP sent no email address. */
        NO_EMAIL,
        /** The address is outside the domains linked to this IdP. */
        DOMAIN_NOT_LINKED,
        /** No user with that address was provisioned (no account is ever created here). */
        NOT_PROVISIONED,
        /** The user belongs to another seller, or to none. */
        OTHER_SELLER,
        /** The user was deactivated. */
        DISABLED
    }

    private SsoLinkPolicy() {
    }

    /**
     * Decide.
     *
     * @param email the address the IdP asserted (may be null)
     * @param domains the domains linked to the IdP (empty: any domain of the organization,
     *     which the caller then passes instead)
     * @param organizationSellerId the seller id of the organization the IdP is linked to
     * @param userSellerId the seller id of the user found by that address (null: none found)
     * @param userEnabled whether that user is enabled
     * @param userFound whether a user with that address exists at all
     * @return the refusal, or null when the user may be linked
     */
    public static Refusal check(String email, Collection<String> domains,
                                String organizationSellerId, String userSellerId,
                                boolean userEnabled, boolean userFound) {
        if (email == null || email.isBlank() || email.indexOf('@') < 1) {
            return Refusal.NO_EMAIL;
        }
        String domain = email.substring(email.lastIndexOf('@') + 1).toLowerCase(Locale.ROOT);
        boolean linked = domains.stream()
                .anyMatch(d -> d != null && domain.equals(d.trim().toLowerCase(Locale.ROOT)));
        if (!linked) {
            return Refusal.DOMAIN_NOT_LINKED;
        }
        if (!userFound) {
            return Refusal.NOT_PROVISIONED;
        }
        if (organizationSellerId == null || !organizationSellerId.equals(userSellerId)) {
            return Refusal.OTHER_SELLER;
        }
        return userEnabled ? null : Refusal.DISABLED;
    }
}
