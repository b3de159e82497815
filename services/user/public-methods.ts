/**
 * The UserService methods that tenants call with their API keys. Every other method of the gateway is internal
 * (the job service's, or the operator's).
 */
export const USER_PUBLIC_METHODS = [
  "CreateUser",
  "GetUser",
  "ConvertImage",
  "ConvertDocument",
  "CreateUploadUrl",
  "GetConversion",
  "WatchConversion",
  "ListConversions",
  // The tenant's own webhook signing secret (webhook-secrets.ts).
  "GetWebhookSecret",
  "RotateWebhookSecret",
] as const;
