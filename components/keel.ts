import * as pulumi from "@pulumi/pulumi";
import { renderCloudConfig } from "../cloud-init/userData";
import { githubRepo, sshPorts, type KeelConfig } from "../config";
import { buildHostPlan } from "../plan/hostPlan";
import { httpsDnsRecords, httpsPorts } from "../plan/https";
import { hostPaths, type HostPaths } from "../plan/layout";
import { renderEnvFile } from "../plan/secrets";
import { connectionGuard } from "./connectionGuard";
import { Firewall } from "./firewall";
import { githubDeployKey } from "./githubDeployKey";
import { HostSteps } from "./hostSteps";
import { Server } from "./server";
import { SshAccess } from "./sshAccess";

export interface KeelArgs {
  /** The validated stack config (config.ts). */
  readonly config: KeelConfig;
  /** The engine's secret environment variables (secret `keel:secretEnv`). */
  readonly secretEnv: pulumi.Input<Record<string, string>>;
  /** Webhook the health check calls on a transition to degraded or down; "" for none. */
  readonly alertWebhookUrl: pulumi.Input<string>;
  /** Stack name, used in the server's name and in labels. */
  readonly stack: string;
  /** The secret `github:token`, when keel:githubDeployKey registers the deploy key. */
  readonly githubToken?: pulumi.Input<string>;
}

/**
 * One hardened VPS running one Python service: SSH identities, the Hetzner firewall, the server
 * with its first-boot cloud-config, and the host plan's converge steps over SSH.
 */
export class Keel extends pulumi.ComponentResource {
  public readonly ipv4: pulumi.Output<string | undefined>;
  public readonly ipv6: pulumi.Output<string>;
  /** `host[,host] ssh-ed25519 AAAA…` for the operator's known_hosts: the pinned host key. */
  public readonly knownHosts: pulumi.Output<string>;
  /** A complete ssh command line that trusts only the pinned key (see docs/RUNBOOK.md). */
  public readonly sshCommand: pulumi.Output<string>;
  public readonly deployPublicKey: pulumi.Output<string>;
  public readonly paths: HostPaths;
  /**
   * The ports SSH is served on (keel:sshPort, and keel:sshPortNext while it moves), from the config.
   * Not gated on the steps that serve them: the runtime registers the stack's outputs all at once,
   * so one output waiting on a failed step would withhold the address and host key the runbook
   * needs after a failed up. A failed up records them too: docs/LIFECYCLE.md says to finish the
   * first up of a port move before the second.
   */
  public readonly sshPorts: number[];
  /** keel:https: the A/AAAA records the operator creates for its domains (DNS is theirs); undefined without it. */
  public readonly httpsDnsRecords: pulumi.Output<{ name: string; type: "A" | "AAAA"; value: string }[]> | undefined;

  constructor(name: string, args: KeelArgs, opts?: pulumi.ComponentResourceOptions) {
    super("keel:index:Keel", name, {}, opts);
    const cfg = args.config;
    const labels = { "managed-by": "keel", project: pulumi.getProject(), stack: args.stack, service: cfg.appName };

    // Nothing that reaches the server (its firewall, its user-data, every step) is registered
    // before this check passes: a change of keel:sshPort or keel:deployUser that would lock the
    // next ups out fails the program first, and the engine changes none of them.
    // The stack's server is found by the labels a config change cannot move (not `service`), and
    // that servers of an older keel already have (not `project`): a keel server of another project
    // with this stack's name counts too, which refuses rather than lets a change through.
    const connectionOk = connectionGuard(`${name}-last-up`, cfg, { "managed-by": labels["managed-by"], stack: labels.stack }, { parent: this });
    const ssh = new SshAccess(`${name}-ssh`, { stack: args.stack, labels, after: connectionOk }, { parent: this });
    const firewall = new Firewall(
      `${name}-firewall`,
      { sshPort: cfg.sshPort, sshPortNext: cfg.sshPortNext, allowedSshCidrs: cfg.allowedSshCidrs, httpsPorts: httpsPorts(cfg), labels, after: connectionOk },
      { parent: this },
    );
    const userData = pulumi.secret(
      pulumi.all([ssh.hostPrivateKey, ssh.hostPublicKey, connectionOk]).apply(([privateKey, publicKey]) => renderCloudConfig(cfg, { privateKey, publicKey })),
    );
    const server = new Server(
      `${name}-host`,
      {
        serverName: `${cfg.appName}-${args.stack}`,
        location: cfg.location,
        serverType: cfg.serverType,
        image: cfg.image,
        userData,
        sshKeyIds: ssh.hcloudKeyIds,
        firewallId: firewall.firewallId,
        ipv4: cfg.ipv4,
        backups: cfg.hetznerBackups,
        protect: cfg.protect,
        labels,
        after: connectionOk,
      },
      { parent: this },
    );

    // keel:githubDeployKey: the clone waits for the key's registration on GitHub.
    const repo = githubRepo(cfg.repoUrl);
    let registered: pulumi.Resource[] = [];
    if (cfg.githubDeployKey) {
      if (!repo || args.githubToken === undefined) throw new Error("keel: keel:githubDeployKey needs a github.com keel:repoUrl and github:token (config.ts checks both)");
      const title = `keel ${pulumi.getProject()}/${args.stack} (${repo.full})`;
      registered = [githubDeployKey(`${name}-deploy-key`, { repo, publicKey: ssh.deployPublicKey, title, token: args.githubToken, after: connectionOk }, { parent: this })];
    }

    const plan = buildHostPlan(cfg);
    new HostSteps(
      `${name}-step`,
      {
        steps: plan.steps,
        host: pulumi.all([server.address, connectionOk]).apply(([address]) => address),
        serverId: server.serverId.apply(String),
        port: cfg.sshPort,
        user: cfg.deployUser,
        hostKey: ssh.hostPublicKey,
        secrets: {
          envFile: pulumi.output(args.secretEnv).apply(renderEnvFile),
          deployKey: ssh.deployPrivateKey,
          alertWebhook: pulumi.secret(args.alertWebhookUrl),
        },
        waitFor: { "engine-source": registered },
      },
      { parent: this, dependsOn: [server] },
    );

    this.ipv4 = server.ipv4;
    this.ipv6 = server.ipv6;
    this.knownHosts = pulumi
      .all([server.ipv4, server.ipv6, ssh.hostPublicKey])
      .apply(([v4, v6, key]) => knownHostsLine([v4, v6].filter((a): a is string => !!a), cfg.sshPort, key));
    this.sshCommand = server.address.apply((address) => sshCommandLine(address, cfg.sshPort, cfg.deployUser));
    this.deployPublicKey = ssh.deployPublicKey;
    this.paths = hostPaths(cfg);
    this.sshPorts = sshPorts(cfg);
    const domains = cfg.https?.domains;
    this.httpsDnsRecords = domains && pulumi.all([server.ipv4, server.ipv6]).apply(([v4, v6]) => httpsDnsRecords(domains, v4, v6));
    this.registerOutputs({ ipv4: this.ipv4, ipv6: this.ipv6, knownHosts: this.knownHosts, sshCommand: this.sshCommand, deployPublicKey: this.deployPublicKey });
  }
}

/** A known_hosts line; OpenSSH writes non-22 ports as `[host]:port`. */
export function knownHostsLine(addresses: string[], port: number, hostKey: string): string {
  const hosts = addresses.map((a) => (port === 22 ? a : `[${a}]:${port}`));
  return `${hosts.join(",")} ${hostKey.trim()}`;
}

/**
 * The ssh command the runbook uses: the pinned known_hosts file only (not the system-wide one, where
 * another key for the address may sit), never trust on first use.
 */
export function sshCommandLine(address: string, port: number, user: string): string {
  return `ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile=keel_known_hosts -o GlobalKnownHostsFile=/dev/null -p ${port} ${user}@${address}`;
}
