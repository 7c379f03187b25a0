/**
 * keel's policy pack: `pulumi preview --policy-pack policy` (and `pulumi up`) refuse a stack that
 * opens more than SSH, boots a server without its firewall, could replace a server for userData or
 * sshKeys, leaves production unprotected, or keeps a secret in plaintext config. docs/CI.md says
 * what each rule checks and where it stops.
 */
import { PolicyPack } from "@pulumi/policy";
import { keelPolicies } from "./policies";

new PolicyPack("keel", { policies: keelPolicies(), enforcementLevel: "mandatory" });
