/**
 * What keel relies on in each image it offers (`keel:image`, Hetzner's image names): one table, so
 * a new image is one entry here and the type checker finds every place that must handle it. Each
 * value is the one the release ships and keeps for its life (security updates do not move a
 * release's OpenSSH, Python or systemd to a new minor version).
 *
 * Sources: the Debian 12/13 values are read on keel's local VMs (test/vm/); Ubuntu 24.04's from its
 * packages (openssh 1:9.6p1, python3 3.12, systemd 255); Ubuntu 26.04's from its release notes
 * (OpenSSH 10.2, Python 3.14, systemd 259, chrony with NTS as the time client since 25.10, sudo-rs
 * as `sudo`, Rust coreutils for most of coreutils). Neither Ubuntu release's packages can be
 * fetched where keel's VM tier runs, so the Ubuntu images are proven by the staging acceptance run
 * (`.github/workflows/staging.yml`, keel verify against a real server), not by a local VM.
 */
export interface ImageFacts {
  /** OpenSSH major.minor. Decides the KEX list and PerSourcePenalty (plan/hardening.ts). */
  readonly openssh: string;
  /** The system python3's major.minor: what keel:pythonVersion must say for this image. */
  readonly python: string;
  /** systemd's version. */
  readonly systemd: number;
  /**
   * The time client keel keeps running: the image's own. Ubuntu moved to chrony (with NTS, time
   * from authenticated servers) in 25.10; replacing it with systemd-timesyncd would drop NTS.
   */
  readonly timeSync: { readonly package: string; readonly unit: string };
  /** sshd starts from ssh.socket, which listens on port 22 whatever sshd_config says. */
  readonly sshSocket: boolean;
  /** The image runs snaps (squashfs images mounted at boot), so squashfs stays loadable. */
  readonly snaps: boolean;
  /** Ubuntu's apport, which sets its own core_pattern at every boot; keel masks it. */
  readonly apport: boolean;
  /**
   * The sudo executables keel's audit rule for sudo watches, the one `sudo` runs first: an audit
   * path rule matches the file the kernel runs, not a link to it, and Ubuntu 26.04's /usr/bin/sudo
   * is a link (through the alternatives system) to sudo-rs; its classic sudo is /usr/bin/sudo.ws.
   */
  readonly sudo: readonly string[];
  /** Where keel's payload and host plan have run on this image (docs/CONFIG.md). */
  readonly provenBy: "local VM" | "staging acceptance run";
  /**
   * The keyword of aide.conf's database line (plan/integrity.ts): `database` on Debian 12, whose
   * aide 0.18.3 takes it (deprecated) and where ANSSI BP-028's aide_build_database reads it;
   * `database_in` elsewhere (aide 0.18.6 on Ubuntu 24.04; aide 0.19, which refuses `database`).
   */
  readonly aideDatabaseKeyword: "database" | "database_in";
}

/**
 * The images keel offers (`keel:image`). Ubuntu 24.04 is the default the project started from;
 * Debian 12 and 13 are the images keel's VM tests boot.
 */
export const IMAGES = ["ubuntu-24.04", "ubuntu-26.04", "debian-12", "debian-13"] as const;

export type Image = (typeof IMAGES)[number];

const TIMESYNCD = { package: "systemd-timesyncd", unit: "systemd-timesyncd.service" } as const;
const CHRONY = { package: "chrony", unit: "chrony.service" } as const;

export const IMAGE_FACTS: Readonly<Record<Image, ImageFacts>> = {
  "ubuntu-24.04": { openssh: "9.6", python: "3.12", systemd: 255, timeSync: TIMESYNCD, sshSocket: true, snaps: true, apport: true, sudo: ["/usr/bin/sudo"], provenBy: "staging acceptance run", aideDatabaseKeyword: "database_in" },
  "ubuntu-26.04": { openssh: "10.2", python: "3.14", systemd: 259, timeSync: CHRONY, sshSocket: true, snaps: true, apport: true, sudo: ["/usr/lib/cargo/bin/sudo", "/usr/bin/sudo.ws"], provenBy: "staging acceptance run", aideDatabaseKeyword: "database_in" },
  "debian-12": { openssh: "9.2", python: "3.11", systemd: 252, timeSync: TIMESYNCD, sshSocket: false, snaps: false, apport: false, sudo: ["/usr/bin/sudo"], provenBy: "local VM", aideDatabaseKeyword: "database" },
  "debian-13": { openssh: "10.0", python: "3.13", systemd: 257, timeSync: TIMESYNCD, sshSocket: false, snaps: false, apport: false, sudo: ["/usr/bin/sudo"], provenBy: "local VM", aideDatabaseKeyword: "database_in" },
};
