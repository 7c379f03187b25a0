import * as hcloud from "@pulumi/hcloud";
import * as pulumi from "@pulumi/pulumi";

export interface FirewallArgs {
  /** The host's SSH port: the only inbound TCP port. */
  readonly sshPort: number;
  /** Source CIDRs allowed to reach SSH. */
  readonly allowedSshCidrs: string[];
  readonly labels: Record<string, string>;
}

const ANYWHERE = ["0.0.0.0/0", "::/0"];

/** The inbound rules: SSH from the allowed CIDRs, ICMP (ping, path MTU) from anywhere, nothing else. */
export function firewallRules(args: Pick<FirewallArgs, "sshPort" | "allowedSshCidrs">): hcloud.types.input.FirewallRule[] {
  return [
    { direction: "in", protocol: "tcp", port: String(args.sshPort), sourceIps: [...args.allowedSshCidrs], description: "SSH from the admin CIDRs" },
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
    const firewall = new hcloud.Firewall(`${name}-fw`, { rules: firewallRules(args), labels: args.labels }, { parent: this });
    this.firewallId = firewall.id.apply(Number);
    this.registerOutputs({ firewallId: this.firewallId });
  }
}
