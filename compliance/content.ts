// The compliance content keel is measured against (issue 14, docs/COMPLIANCE.md): ComplianceAsCode's
// ANSSI BP-028 profiles for Debian 12. Debian 12's own ssg-debian (0.1.65) has content for Debian
// 10/11 only; Debian 13's ssg-debian 0.1.76 has ssg-debian12-ds.xml, evaluated by Debian 12's
// openscap-scanner (1.3.7). The package is pinned by version and sha256: a new upload to trixie is a
// deliberate change here, not a silent one in the figures.

export const SSG_PACKAGE = {
  name: "ssg-debian",
  version: "0.1.76-1",
  url: "http://deb.debian.org/debian/pool/main/s/scap-security-guide/ssg-debian_0.1.76-1_all.deb",
  sha256: "f6880719015c16e8e221bc2503c0e5a9f83d6a09fc6f9292d3522e46bf4fc9d7",
  /** The source data stream, inside the package. */
  dataStream: "usr/share/xml/scap/ssg/content/ssg-debian12-ds.xml",
} as const;

/** Where the data stream is on a host that has ssg-debian 0.1.76 installed; the tailoring file names it. */
export const DATA_STREAM_INSTALLED = `/${SSG_PACKAGE.dataStream}`;

const PROFILE_PREFIX = "xccdf_org.ssgproject.content_profile_";
export const RULE_PREFIX = "xccdf_org.ssgproject.content_rule_";

/** The ANSSI BP-028 levels keel reports on: intermediary is the target, enhanced is printed. */
export const PROFILES = {
  intermediary: `${PROFILE_PREFIX}anssi_bp28_intermediary`,
  enhanced: `${PROFILE_PREFIX}anssi_bp28_enhanced`,
} as const;
export type ProfileLevel = keyof typeof PROFILES;
export const PROFILE_LEVELS = Object.keys(PROFILES) as ProfileLevel[];

/** The tailored profile of a level, as the tailoring file declares it. */
export const tailoredProfileId = (level: ProfileLevel) => `xccdf_keel_profile_anssi_bp28_${level}_keel`;
