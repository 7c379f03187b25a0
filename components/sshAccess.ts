import * as hcloud from "@pulumi/hcloud";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import * as tls from "@pulumi/tls";

export interface SshAccessArgs {
  /** The stack's name, in the Hetzner SSH key's name. */
  readonly stack: string;
  /** Labels put on the Hetzner SSH key. */
  readonly labels: Record<string, string>;
  /** The Hetzner key is registered only once this resolves (components/connectionGuard.ts). */
  readonly after?: pulumi.Input<unknown>;
}

/**
 * The SSH identities keel manages: the server's ED25519 host key (installed by cloud-init and
 * pinned in every connection: no trust on first use), the read-only deploy key for the git host,
 * and a key of this stack's own registered with Hetzner. Private halves live only in Pulumi state,
 * encrypted.
 *
 * The Hetzner key exists only so Hetzner never mails a root password for a server created without
 * one. It can never log in: keel's cloud-config installs no key from the metadata
 * (`allow_public_ssh_keys: false`, `disable_root: true`); the admin keys reach the deploy user
 * through the cloud-config alone. It is the stack's own, never an admin key, because Hetzner keeps
 * one key per fingerprint in a project: a second stack (or a key already added in the Console) that
 * registered an admin key fails with `uniqueness_error` (SSH key with the same fingerprint already
 * exists). Its name carries a random suffix, so two stacks of the same name in different Pulumi
 * projects do not collide on the (also unique) name either.
 */
export class SshAccess extends pulumi.ComponentResource {
  /** Hetzner SSH key IDs for the server's `sshKeys`. */
  public readonly hcloudKeyIds: pulumi.Output<string[]>;
  /** `ssh-ed25519 AAAA…` of the host key, pinned as `connection.hostKey`. */
  public readonly hostPublicKey: pulumi.Output<string>;
  /** OpenSSH private host key (secret). */
  public readonly hostPrivateKey: pulumi.Output<string>;
  /** Public half of the deploy key: the operator adds it to the git host as a read-only deploy key. */
  public readonly deployPublicKey: pulumi.Output<string>;
  /** OpenSSH private deploy key (secret). */
  public readonly deployPrivateKey: pulumi.Output<string>;

  constructor(name: string, args: SshAccessArgs, opts?: pulumi.ComponentResourceOptions) {
    super("keel:ssh:Access", name, {}, opts);
    const providerKey = new tls.PrivateKey(`${name}-hcloud`, { algorithm: "ED25519" }, { parent: this, additionalSecretOutputs: ["privateKeyOpenssh"] });
    const suffix = new random.RandomId(`${name}-hcloud-suffix`, { byteLength: 4 }, { parent: this });
    const registered = new hcloud.SshKey(
      `${name}-hcloud`,
      { name: pulumi.interpolate`keel-${args.stack}-${suffix.hex}`, publicKey: pulumi.all([providerKey.publicKeyOpenssh, args.after]).apply(([k]) => k.trim()), labels: args.labels },
      { parent: this },
    );
    const host = new tls.PrivateKey(`${name}-host`, { algorithm: "ED25519" }, { parent: this, additionalSecretOutputs: ["privateKeyOpenssh"] });
    const deploy = new tls.PrivateKey(`${name}-deploy`, { algorithm: "ED25519" }, { parent: this, additionalSecretOutputs: ["privateKeyOpenssh"] });

    this.hcloudKeyIds = pulumi.output([registered.id]);
    this.hostPublicKey = host.publicKeyOpenssh.apply((k) => k.trim());
    this.hostPrivateKey = pulumi.secret(host.privateKeyOpenssh);
    this.deployPublicKey = deploy.publicKeyOpenssh.apply((k) => k.trim());
    this.deployPrivateKey = pulumi.secret(deploy.privateKeyOpenssh);
    this.registerOutputs({ hcloudKeyIds: this.hcloudKeyIds, hostPublicKey: this.hostPublicKey, deployPublicKey: this.deployPublicKey });
  }
}
