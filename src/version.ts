/** The release version, printed by `slirp-relay --version`. */
export const VERSION = "0.1.0";
