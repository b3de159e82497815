/** Every RPC of every service, and a way to call any one of them with an empty request (the security tests). */
import type { DescService } from "@bufbuild/protobuf";
import { ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ClientService, EmailService, ImageService, JobService, UserService } from "@mcsv/sdk";
import type { ServiceKey } from "../../services/shared/topology.js";

/** Each service's key and its contract. */
export const SERVICE_CONTRACTS: [ServiceKey, DescService][] = [
  ["user", UserService],
  ["job", JobService],
  ["email", EmailService],
  ["image", ImageService],
  ["client", ClientService],
];

/** Calls `service`/`methodName` at `baseUrl` with an empty request: undefined when it succeeds, else its error. */
export async function callEmpty(baseUrl: string, service: DescService, methodName: string, interceptors: Interceptor[]): Promise<ConnectError | undefined> {
  const client = createClient(service, createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors })) as unknown as Record<
    string,
    (request: object) => Promise<unknown> | AsyncIterable<unknown>
  >;
  const method = service.methods.find((m) => m.name === methodName)!;
  try {
    const result = client[method.localName]!({});
    // A stream's first message is enough.
    if (Symbol.asyncIterator in (result as object)) for await (const _ of result as AsyncIterable<unknown>) break;
    else await result;
    return undefined;
  } catch (error) {
    return ConnectError.from(error);
  }
}
