/**
 * ListConversions' page token: an opaque keyset cursor (the position of the last conversion returned), bound to the
 * tenant and address it was issued for, so that a token cannot be replayed against another listing. The binding
 * gives clear errors, not secrecy: the listing itself is scoped to the caller's tenant whatever the token says.
 */
import { createHash } from "node:crypto";
import { z } from "zod";

const tokenShape = z.object({ v: z.literal(1), after: z.string().regex(/^\d{1,19}$/), owner: z.string() });

/** Whose listing a token belongs to. */
export interface Listing {
  tenant: string;
  email: string;
}

function ownerTag(listing: Listing): string {
  return createHash("sha256").update(`${listing.tenant}\n${listing.email.toLowerCase()}`).digest("base64url").slice(0, 16);
}

export function encodePageToken(afterSeq: string, listing: Listing): string {
  return Buffer.from(JSON.stringify({ v: 1, after: afterSeq, owner: ownerTag(listing) })).toString("base64url");
}

/** The position after which the next page starts, or undefined when the token is not one of ours for `listing`. */
export function decodePageToken(token: string, listing: Listing): string | undefined {
  if (token.length > 512 || !/^[A-Za-z0-9_-]+$/.test(token)) return undefined;
  try {
    const parsed = tokenShape.safeParse(JSON.parse(Buffer.from(token, "base64url").toString("utf8")));
    return parsed.success && parsed.data.owner === ownerTag(listing) ? parsed.data.after : undefined;
  } catch {
    return undefined;
  }
}
