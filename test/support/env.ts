/**
 * The environment for a keel tool a host test runs as root: this process's, without sudo's
 * variables (under `sudo npm test` keel-host-conf would rightly refuse KEEL_HOST_CONF), plus `extra`.
 */
export function rootToolEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  for (const k of Object.keys(env)) if (k.startsWith("SUDO_")) delete env[k];
  return env;
}
