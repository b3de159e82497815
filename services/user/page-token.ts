/**
 * ListConversions' page token: an opaque keyset cursor (the position of the last conversion returned), bound to the
 * address it was issued for, so that a token cannot be replayed against another listing.
 */
import { createHash } from "node:crypto";
import { z } from "zod";

const tokenShape = z.object({ v: z.literal(1), after: z.string().regex(/^\d{1,19}$/), owner: z.string() });

function ownerTag(email: string): string {
  return createHash("sha256").update(email.toLowerCase()).digest("base64url").slice(0, 16);
}

export function encodePageToken(afterSeq: string, email: string): string {
  return Buffer.from(JSON.stringify({ v: 1, after: afterSeq, owner: ownerTag(email) })).toString("base64url");
}

/** The position after which the next page starts, or undefined when the token is not one of ours for `email`. */
export function decodePageToken(token: string, email: string): string | undefined {
  if (token.length > 512 || !/^[A-Za-z0-9_-]+$/.test(token)) return undefined;
  try {
    const parsed = tokenShape.safeParse(JSON.parse(Buffer.from(token, "base64url").toString("utf8")));
    return parsed.success && parsed.data.owner === ownerTag(email) ? parsed.data.after : undefined;
  } catch {
    return undefined;
  }
}
