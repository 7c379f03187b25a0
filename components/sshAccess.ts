import * as hcloud from "@pulumi/hcloud";
import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";

export interface SshAccessArgs {
  /** The admin key registered with Hetzner, so Hetzner never mails a root password. */
  readonly adminKey: string;
  /** Labels put on the Hetzner SSH key. */
  readonly labels: Record<string, string>;
}

/**
 * The SSH identities keel manages: the admin key as an hcloud.SshKey, the server's ED25519 host key
 * (installed by cloud-init and pinned in every connection: no trust on first use) and the read-only
 * deploy key for the git host. Private halves live only in Pulumi state, encrypted.
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
    const admin = new hcloud.SshKey(`${name}-admin`, { publicKey: args.adminKey, labels: args.labels }, { parent: this });
    const host = new tls.PrivateKey(`${name}-host`, { algorithm: "ED25519" }, { parent: this, additionalSecretOutputs: ["privateKeyOpenssh"] });
    const deploy = new tls.PrivateKey(`${name}-deploy`, { algorithm: "ED25519" }, { parent: this, additionalSecretOutputs: ["privateKeyOpenssh"] });

    this.hcloudKeyIds = pulumi.output([admin.id]);
    this.hostPublicKey = host.publicKeyOpenssh.apply((k) => k.trim());
    this.hostPrivateKey = pulumi.secret(host.privateKeyOpenssh);
    this.deployPublicKey = deploy.publicKeyOpenssh.apply((k) => k.trim());
    this.deployPrivateKey = pulumi.secret(deploy.privateKeyOpenssh);
    this.registerOutputs({ hcloudKeyIds: this.hcloudKeyIds, hostPublicKey: this.hostPublicKey, deployPublicKey: this.deployPublicKey });
  }
}
