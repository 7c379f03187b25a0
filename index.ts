/**
 * keel: one boring, hardened Hetzner VPS for one Python service and its SQLite database.
 *
 *   stack config ──zod──► KeelConfig ──► host plan (plan/): cloud-config, files, ordered steps
 *                                          └─ executed by components/ (Hetzner + @pulumi/command)
 *
 * docs/ has the runbook and every config key.
 */
import * as pulumi from "@pulumi/pulumi";
import { Keel } from "./components/keel";
import { loadStackConfig } from "./config";

// 1. Validate every keel:* key before anything is created.
const { config, secretEnv, alertWebhookUrl, githubToken } = loadStackConfig();

// 2. The server, its firewall and SSH identities, and the converge steps.
const keel = new Keel("keel", { config, secretEnv, alertWebhookUrl, githubToken, stack: pulumi.getStack() });

// 3. What the runbook reads with `pulumi stack output --json`.
export const ipv4 = keel.ipv4;
export const ipv6 = keel.ipv6;
export const sshPort = config.sshPort;
/** Every port SSH is served on: sshPort, and keel:sshPortNext while the port moves (read back by the next up). */
export const sshPorts = keel.sshPorts;
export const deployUser = config.deployUser;
/** What the server was created with; the next up refuses a change while it exists (components/connectionGuard.ts). */
export const image = config.image;
export const location = config.location;
export const sshCommand = keel.sshCommand;
export const knownHosts = keel.knownHosts;
export const deployPublicKey = keel.deployPublicKey;
export const serviceName = keel.paths.unit;
export const paths = keel.paths;
/**
 * The A/AAAA records to create for keel:https's domains (docs/HTTPS.md "DNS"); [] without it (the
 * runtime warns of an undefined export, and leaves it out: @pulumi/pulumi runtime/stack.ts).
 */
export const httpsDnsRecords = keel.httpsDnsRecords ?? [];
