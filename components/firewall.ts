import * as hcloud from "@pulumi/hcloud";
import * as pulumi from "@pulumi/pulumi";
import { sshPorts } from "../config";

export interface FirewallArgs {
  /** The host's SSH port: the only inbound TCP port. */
  readonly sshPort: number;
  /** The port SSH moves to (keel:sshPortNext), open beside sshPort until the move ends. */
  readonly sshPortNext?: number;
  /** Source CIDRs allowed to reach SSH. */
  readonly allowedSshCidrs: string[];
  /** keel:https's ports (plan/https.ts httpsPorts), open to anyone; none without keel:https. */
  readonly httpsPorts?: readonly number[];
  readonly labels: Record<string, string>;
  /** The rules are registered only once this resolves (components/connectionGuard.ts). */
  readonly after?: pulumi.Input<unknown>;
}

const ANYWHERE = ["0.0.0.0/0", "::/0"];

/**
 * The inbound rules: SSH from the allowed CIDRs (on both ports while it moves), with keel:https its
 * ports from anywhere (Caddy's gate decides by keel:https.allowedCidrs: ACME's validation and the
 * open paths come from anywhere), ICMP (ping, path MTU) from anywhere, nothing else.
 */
export function firewallRules(args: Pick<FirewallArgs, "sshPort" | "sshPortNext" | "allowedSshCidrs" | "httpsPorts">): hcloud.types.input.FirewallRule[] {
  return [
    ...sshPorts(args).map((port) => ({
      direction: "in",
      protocol: "tcp",
      port: String(port),
      sourceIps: [...args.allowedSshCidrs],
      description: port === args.sshPort ? "SSH from the admin CIDRs" : "SSH from the admin CIDRs (keel:sshPortNext)",
    })),
    ...(args.httpsPorts ?? []).map((port) => ({
      direction: "in",
      protocol: "tcp",
      port: String(port),
      sourceIps: ANYWHERE,
      description: port === 80 ? "HTTP for ACME and the redirect (keel:https)" : "HTTPS (keel:https)",
    })),
    { direction: "in", protocol: "icmp", sourceIps: ANYWHERE, description: "ICMP (ping, path MTU discovery)" },
  ];
}

/**
 * Hetzner's network firewall in front of the host (belt and braces with UFW on the host, seed 000
 * §8). Attached through the server's `firewallIds`, so the server is closed from its first boot.
 */
export class Firewall extends pulumi.ComponentResource {
  /** Numeric firewall ID, as the server's `firewallIds` wants it. */
  public readonly firewallId: pulumi.Output<number>;

  constructor(name: string, args: FirewallArgs, opts?: pulumi.ComponentResourceOptions) {
    super("keel:hcloud:Firewall", name, {}, opts);
    const rules = pulumi.all([args.after]).apply(() => firewallRules(args));
    const firewall = new hcloud.Firewall(`${name}-fw`, { rules, labels: args.labels }, { parent: this });
    this.firewallId = firewall.id.apply(Number);
    this.registerOutputs({ firewallId: this.firewallId });
  }
}
