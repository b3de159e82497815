/** SecretSet: which presented credentials match (the constant time is by construction, see auth.ts). */
import { SecretSet, internalOnly, publicWithInternal } from "../../services/shared/auth.js";

const KEY_A = "key-a-0123456789abcdefghijklmn";
const KEY_B = "key-b-0123456789abcdefghijklmn";
const INTERNAL = "internal-0123456789abcdefghij";

test("a presented secret matches only when it equals one of the accepted ones exactly", () => {
  const set = new SecretSet([KEY_A, KEY_B]);
  expect(set.matches(KEY_A)).toBe(true);
  expect(set.matches(KEY_B)).toBe(true);
  for (const wrong of ["", KEY_A.slice(0, -1), `${KEY_A}x`, KEY_A.toUpperCase(), ` ${KEY_A}`, INTERNAL]) expect(set.matches(wrong)).toBe(false);
  expect(new SecretSet([]).matches(KEY_A)).toBe(false);
});

test("policies: internal methods take the internal token only, public ones the API keys only", () => {
  const gateway = publicWithInternal([KEY_A], INTERNAL, ["NotifyImageConverted"]);
  expect(gateway.secretsFor("mcsv.v1.UserService", "CreateUser").matches(KEY_A)).toBe(true);
  expect(gateway.secretsFor("mcsv.v1.UserService", "CreateUser").matches(INTERNAL)).toBe(false);
  expect(gateway.secretsFor("mcsv.v1.UserService", "NotifyImageConverted").matches(INTERNAL)).toBe(true);
  expect(gateway.secretsFor("mcsv.v1.UserService", "NotifyImageConverted").matches(KEY_A)).toBe(false);
  const internal = internalOnly(INTERNAL);
  expect(internal.secretsFor("mcsv.v1.EmailService", "SendEmail").matches(INTERNAL)).toBe(true);
  expect(internal.secretsFor("mcsv.v1.EmailService", "SendEmail").matches(KEY_A)).toBe(false);
});
