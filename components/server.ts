import * as hcloud from "@pulumi/hcloud";
import * as pulumi from "@pulumi/pulumi";

export interface ServerArgs {
  /** Server name at Hetzner, also the host name. */
  readonly serverName: string;
  readonly location: string;
  readonly serverType: string;
  readonly image: string;
  /** First-boot cloud-config (secret: it carries the host's private key). Never replaces a running server. */
  readonly userData: pulumi.Input<string>;
  /** Hetzner SSH key IDs; only used at creation (no root password mail). */
  readonly sshKeyIds: pulumi.Input<string[]>;
  /** Firewall attached at creation, so no port is ever open before the rules apply. */
  readonly firewallId: pulumi.Input<number>;
  /** Attach a public IPv4. Defaults to true in the stack config; IPv6 is always attached. */
  readonly ipv4: boolean;
  /** Hetzner's own daily server backups. */
  readonly backups: boolean;
  /** Hetzner delete/rebuild protection and Pulumi `protect` on the server and its IPs. */
  readonly protect: boolean;
  readonly labels: Record<string, string>;
  /** The primary IPs are registered only once this resolves (components/connectionGuard.ts). */
  readonly after?: pulumi.Input<unknown>;
}

/**
 * The VPS and its primary IPs. The IPs are separate resources with autoDelete off, so a rebuilt
 * server keeps its addresses (DNS, allow-lists and known_hosts stay valid).
 *
 * Hetzner replaces a server whenever `userData` or `sshKeys` change; both are ignored after
 * creation, and later changes reach the host through keel's converge steps instead. Only an image or
 * location change replaces the server, and a protected stack refuses even that.
 */
export class Server extends pulumi.ComponentResource {
  public readonly serverId: pulumi.Output<number>;
  /** Public IPv4, or undefined for an IPv6-only server. */
  public readonly ipv4: pulumi.Output<string | undefined>;
  /** The server's IPv6 address (the ::1 of its /64). */
  public readonly ipv6: pulumi.Output<string>;
  /** The address keel connects to: IPv4 when there is one, IPv6 otherwise. */
  public readonly address: pulumi.Output<string>;

  constructor(name: string, args: ServerArgs, opts?: pulumi.ComponentResourceOptions) {
    super("keel:hcloud:Server", name, {}, opts);
    const ipOpts = { parent: this, protect: args.protect };
    const primaryIp = (family: "ipv4" | "ipv6") =>
      new hcloud.PrimaryIp(
        `${name}-${family}`,
        {
          type: family,
          assigneeType: "server",
          autoDelete: false,
          location: pulumi.all([args.after]).apply(() => args.location),
          deleteProtection: args.protect,
          labels: args.labels,
        },
        ipOpts,
      );
    const v4 = args.ipv4 ? primaryIp("ipv4") : undefined;
    const v6 = primaryIp("ipv6");

    const server = new hcloud.Server(
      `${name}-server`,
      {
        name: args.serverName,
        serverType: args.serverType,
        image: args.image,
        location: args.location,
        userData: args.userData,
        sshKeys: args.sshKeyIds,
        firewallIds: [args.firewallId],
        publicNets: [{ ipv4Enabled: args.ipv4, ipv4: v4?.id.apply(Number), ipv6Enabled: true, ipv6: v6.id.apply(Number) }],
        backups: args.backups,
        deleteProtection: args.protect,
        rebuildProtection: args.protect,
        shutdownBeforeDeletion: true,
        labels: args.labels,
      },
      { parent: this, protect: args.protect, ignoreChanges: ["userData", "sshKeys"], additionalSecretOutputs: ["userData"] },
    );

    this.serverId = server.id.apply(Number);
    this.ipv4 = v4 ? v4.ipAddress.apply((a) => a) : pulumi.output(undefined);
    this.ipv6 = server.ipv6Address;
    this.address = v4 ? v4.ipAddress : server.ipv6Address;
    this.registerOutputs({ serverId: this.serverId, ipv4: this.ipv4, ipv6: this.ipv6 });
  }
}
